"""Packing: many rounds trained side by side as one network with stacked weights.

`PackedTrainer` holds `capacity` slots of one architecture on one device.
Each slot is a member: one `RoundJob` with its own weights, masks, optimiser
state, learning-rate schedule, data order, augmentations, dropout stream,
evaluation points, early-stop and patience bookkeeping. `step()` advances
every member by one iteration: one forward and one backward pass over all
members (Linear layers as batched matmuls, Conv2d as one grouped
convolution where that is exact and fits the cache, member by member
otherwise), the masks applied to all members at once, and one fused
optimiser call per group of members that share hyperparameters. A member
that reaches its end (or is stopped by patience, or diverges) leaves with the
`TrainResult` (or `DivergedError`) `training.train` gives it alone, its final
state copied back into `job.model`.

What a round does besides stepping (evaluation points, θ_k, early stopping,
patience, divergence, the test reads) is each member's `RoundProtocol`, the
one the solo trainer uses. `drivers.drive_packed` runs job generators
(searches, or the study layer's trials) through packs, taking the next
generator whenever one finishes.

The modules, one concept each: `_layouts` (how n members' activations are
laid out), `_layers` (the packed layers, forward and backward), `_probes`
(exactness checks of batched kernels), `_net` (the stacked network and its
pass), `_trainer` (slots, the optimiser step, the members' protocols).

Numbers: bit-identical to the solo run, by construction and by check.

- The backward pass is written out (no autograd) with the very kernels
  autograd runs for the unpacked model: `addmm`'s backward (weight gradient
  gᵀx, input gradient gW, bias gradient Σ over the batch),
  `convolution_backward`, `max_pool2d_with_indices_backward`,
  `threshold_backward` for ReLU, dropout's two multiplies in autograd's order,
  `nll_loss_backward` and `_log_softmax_backward_data` on the members' rows.
- The optimiser is torch's own fused Adam / SGD kernel (what
  `training.make_optimizer` builds) on each member's slices, with each
  member's lr, weight decay, momentum and step count; state starts at 0 for
  every job, as a fresh optimiser does. Masks multiply the gradients before
  the step, as the solo step does; a pruned weight starts at 0 (every start
  is masked) and then stays exactly ±0 (zero gradient, zero moments or
  momentum, zero weight decay term: a zero update).
- The batched kernels (bmm/baddbmm, grouped convolution) are *checked*: the
  first time a layer runs with n members, a probe runs its batched forward
  and backward on random data and compares output, input, weight and bias
  gradients bit for bit with `F.linear` / `F.conv2d` run member by member
  under autograd. Kernels pick algorithms from shapes, layouts and threads,
  never from values, so a probe answers for every step with those. A layer
  that is not exact batched runs member by member (still inside the one
  packed step), with the same kernels as the unpacked layer.
- Evaluations run on `job.model` itself, holding the member's weights.

On this CPU (torch 2.14, MKL, oneDNN, AVX-512) every Linear layer of the
packable models batches exactly, and so does every convolution reading 64 or
more channels; one reading few channels (conv1 on 1- or 3-channel images,
lenet-5's 6->16) is not exact grouped and runs member by member. On a CPU a
grouped convolution is also skipped when the members' stacked output would
exceed `GROUPED_CONV_MAX_BYTES` (16 MiB): past the caches it is slower than
member by member. `exact=False` skips the probes and batches whatever may
be batched: numbers then agree to float rounding at first (~1e-7 relative
per step), which training can amplify.
"""

from __future__ import annotations

from ._probes import probe_layer
from ._trainer import PackedTrainer, job_key

__all__ = ["PackedTrainer", "job_key", "probe_layer"]

"""Sparse kernels for pruned fully connected layers: a ticket's round costs what its density says.

A layer below its crossover density with `[train] kernels = "auto"` (timed on the machine the run is on, for
the layer's shape and the batch size: crossover.py), every layer with a pruned weight with `kernels = "sparse"`,
keeps its surviving weights as the values of its mask's CSR structure (csr.py), and a step computes only with
them:

- forward: y = W x + b as a CSR times dense product (`torch.sparse.mm`);
- the input gradient: Wᵀ g through the transposed structure, whose values are
  the layer's gathered by a fixed permutation;
- the weight gradient: g xᵀ at the mask's positions only (`torch.sparse.sampled_addmm`);
- the optimiser updates the values (and the bias), so its cost falls with density too.

The values are written back into the dense weight (O(nnz)) whenever the trainer
is about to read the model (`Step.sync`: evaluation points, θ_k, callbacks'
`on_step`, the round's end), so everything that reads it (evaluation, θ_k,
early-stop snapshots, the cache, the masks check) sees the weights as the dense
path holds them; pruned weights are never written and stay exactly 0. The
numbers agree with the dense path's to float tolerance, not bit for bit (other
summation orders): the setting is part of `TrainConfig`, so of every cache key (which layers `auto` put on
which kernels is not: crossover.py says why). Deterministic: the CPU CSR kernels run in a fixed order on one
thread.

`SPARSE_BELOW` is the crossover measured by benchmarks/sparse_speed.py on
LeNet-300-100 at batch 60 (CPU, one thread) on the first machine: an exported
model's layers run as CSR below it (`csr_pays`). On CUDA, and for conv layers,
the dense path stays (the README gives the measurements).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .config import TrainConfig
from .crossover import crossover
from .csr import SparseLinear, csr_columns, csr_linear
from .models.layers import plain_mlp
from .pruning import Masks

SPARSE_BELOW = 0.25  # density under which an exported model's Linear layer runs as CSR (measured: see above)
# ... if it has this many weights: a small layer's call costs more than its arithmetic (the exported 3.6% ticket
# at batch 1, benchmarks/sparse_speed.py on the first machine, with the export's earlier loop: 1.34x its dense
# model with the 1,000-weight output layer dense, 1.16x with it as CSR; in training the difference was noise)
SPARSE_MIN_WEIGHTS = 10_000
EVAL_CHUNK = 256  # examples per sparse product in evaluation: CSR times a wide matrix loses to a dense GEMM


# An inference pass as a chain of (weight, bias, ReLU after it), each weight CSR or dense: what evaluation and the
# exported sparse model run. Not modules: at batch 1 a module call or an autograd context costs more than the
# arithmetic of a 3.6% layer.
Chain = list[tuple[torch.Tensor, torch.Tensor, bool]]


def chain_of(model: nn.Module, weight, bias) -> Chain:
    """The chain of a plain MLP (`plain_mlp`): weight(name, module) and bias(name, module) give each Linear's."""
    chain: Chain = []
    for name, m in model.named_children():
        if isinstance(m, nn.Linear | CSRLinear):
            chain.append((weight(name, m), bias(name, m), False))
        elif isinstance(m, nn.ReLU):
            chain[-1] = (*chain[-1][:2], True)
        # (Flatten: run_chain flattens its input; Dropout: the identity in eval mode)
    return chain


def run_chain(chain: Chain, x: torch.Tensor) -> torch.Tensor:
    """The logits of x (batch, ...) through `chain`, without a graph.

    One example goes through matrix-vector products (`addmv`: for one example the cheapest call, dense or CSR).
    A batch goes in chunks of EVAL_CHUNK examples, each transposed once to (features, batch), the layout the CSR
    kernel reads fastest, and kept so through every layer (a dense layer is then W h, a plain GEMM).
    """
    if len(x) == 1:
        v = x.reshape(-1)
        for w, b, relu in chain:
            v = torch.addmv(b, w, v)
            if relu:
                v.relu_()
        return v.unsqueeze(0)
    return in_chunks(lambda part: _columns(chain, part), x)


def _columns(chain: Chain, x: torch.Tensor) -> torch.Tensor:
    h = x.flatten(1).t().contiguous()
    for w, b, relu in chain:
        h = csr_columns(w, h, b) if w.layout == torch.sparse_csr else torch.addmm(b.unsqueeze(1), w, h)
        if relu:
            h.relu_()
    return h.t()


def in_chunks(forward, x: torch.Tensor) -> torch.Tensor:
    """`forward` over x in chunks of EVAL_CHUNK examples, concatenated."""
    return forward(x) if len(x) <= EVAL_CHUNK else torch.cat([forward(part) for part in x.split(EVAL_CHUNK)])


def trains_sparse(mask: torch.Tensor | None, cfg: TrainConfig, first: bool) -> bool:
    """Whether a Linear layer with this mask takes the sparse kernels in a round trained with `cfg` (its kernels:
    "dense", "sparse" or "auto"); `first`: the network's first Linear layer (its input needs no gradient)."""
    kernels = cfg.kernels
    if mask is None or kernels == "dense":
        return False
    density = float(mask.float().mean())
    if density >= 1.0:
        return False  # (a dense layer gains nothing)
    if kernels == "auto":
        out_features, in_features = mask.shape
        return density < crossover(out_features, in_features, cfg.batch_size, first, cfg.optimizer)
    return True


def csr_pays(mask: torch.Tensor | None) -> bool:
    """Whether an exported model's layer runs as CSR: below SPARSE_BELOW density, with SPARSE_MIN_WEIGHTS weights
    (a fixed rule: the model runs on machines measured nowhere, at batch sizes not known here)."""
    if mask is None:
        return False
    return float(mask.float().mean()) < SPARSE_BELOW and mask.numel() >= SPARSE_MIN_WEIGHTS


def chainable(model: nn.Module) -> bool:
    """A plain MLP (`plain_mlp`) whose first layer after any Flatten is a Linear one: what `run_chain` runs."""
    first = next((m for m in model.children() if not isinstance(m, nn.Flatten)), None) if plain_mlp(model) else None
    return isinstance(first, nn.Linear)


def sparse_supported(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
    """Whether `cfg.kernels` may put this model's layers on the sparse kernels: a plain MLP, on the CPU."""
    return cfg.kernels != "dense" and device.type == "cpu" and chainable(model)


class SparseEval:
    """The model's eval-mode forward pass with the layers `trains_sparse` picks as CSR: what evaluation runs.

    Its own structures (never the training step's), filled from a state, or from the model, at `prepare`:
    an overlapped validation thread reads a snapshot while training goes on.
    """

    def __init__(self, model: nn.Module, masks: Masks, cfg: TrainConfig, moving: bool = False):
        self.model, self.masks, self.cfg, self.moving = model, masks, cfg, moving
        linears = [(name, m) for name, m in model.named_children() if isinstance(m, nn.Linear)]
        self.layers = {name: SparseLinear(masks[name], m.weight) for i, (name, m) in enumerate(linears)
                       if trains_sparse(masks.get(name), cfg, first=i == 0)}

    @staticmethod
    def of(model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device,
           moving: bool = False) -> SparseEval | None:
        """The sparse forward pass where the step is sparse too; None where evaluation stays dense. `moving`: the
        masks change during the round (mask_updates.py)."""
        if not sparse_supported(model, cfg, device):
            return None
        found = SparseEval(model, masks, cfg, moving)
        return found if found.layers else None

    def on(self, model: nn.Module) -> SparseEval:
        """The same layers on a copy of the model, with buffers of their own (for another thread)."""
        return SparseEval(model, self.masks, self.cfg, self.moving)

    @torch.no_grad()
    def prepare(self, state: dict[str, torch.Tensor] | None = None):
        """A forward function of the weights in `state` (default: the model's own, now)."""
        state = self.model.state_dict() if state is None else state
        if self.moving:
            # The state's own structure: its nonzero weights. Masks that move leave the round's start structure
            # behind, and a state kept earlier (the early-stop one) had other masks; its pruned weights are exactly
            # 0, and a product without the exact zeros of a mask sums the same terms.
            for name in self.layers:
                weight = state[f"{name}.weight"]
                self.layers[name] = SparseLinear(weight != 0, weight, transposed=False)
        for name, layer in self.layers.items():
            torch.index_select(state[f"{name}.weight"].reshape(-1), 0, layer.flat, out=layer.values)

        chain = chain_of(self.model, lambda n, m: self.layers[n].csr if n in self.layers else state[f"{n}.weight"],
                         lambda n, m: state[f"{n}.bias"])
        return lambda x: run_chain(chain, x)


class CSRLinear(nn.Module):
    """An inference-only Linear layer holding its weight as CSR (int32 indices): memory and time scale with nnz."""

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.weight = (weight.detach() * mask).to_sparse_csr().to(torch.float32)
            self.weight = torch.sparse_csr_tensor(self.weight.crow_indices().to(torch.int32),
                                                  self.weight.col_indices().to(torch.int32), self.weight.values(),
                                                  weight.shape, check_invariants=False)
        self.bias = torch.zeros(self.out_features) if bias is None else bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            if len(x) == 1:  # (one example: a sparse matrix-vector product, the cheapest call)
                return torch.addmv(self.bias, self.weight, x[0]).unsqueeze(0)
            return csr_linear(self.weight, x, self.bias)

    def nbytes(self) -> int:
        w = self.weight
        return sum(t.numel() * t.element_size() for t in (w.crow_indices(), w.col_indices(), w.values(),
                                                          self.bias))


class SparseMLP(nn.Module):
    """The inference model `sparse_model` builds: its layers' weights run as one `run_chain` (no module call or
    autograd context per layer; the modules stay, for reading)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        for p in self.parameters():
            p.requires_grad_(False)  # (inference only: no call records a graph)
        self._chain = chain_of(nn.Sequential(*layers), lambda n, m: m.weight, lambda n, m: m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:  # (the only way a call could record a graph: the weights need none)
            with torch.no_grad():
                return run_chain(self._chain, x.detach())
        return run_chain(self._chain, x)

    def __iter__(self):
        return iter(self.layers)


def sparse_model(model: nn.Module, masks: Masks) -> SparseMLP:
    """An inference copy of a fully connected network: each masked Linear layer where CSR pays as a `CSRLinear`.

    CSR pays where `csr_pays` says (below SPARSE_BELOW density, with enough weights); a small or dense layer
    stays a dense Linear with its masked weights. The predictions are the dense model's (the products sum in
    another order: logits agree to float tolerance). A network with other layers than Flatten, Linear, ReLU and
    Dropout is refused (conv layers stay dense: the README's performance section has the
    measurements).
    """
    from .errors import ConfigError

    if not chainable(model):
        raise ConfigError(f"the sparse model covers fully connected networks (Flatten, Linear, ReLU, Dropout, a "
                          f"Linear layer first); {type(model).__name__} is not one: use the dense model "
                          f"(Ticket.model())")
    layers: list[nn.Module] = []
    for name, m in model.named_children():
        if isinstance(m, nn.Linear):
            mask = masks.get(name)
            weight, bias = m.weight.detach().cpu(), m.bias.detach().cpu()
            if csr_pays(mask):
                layers.append(CSRLinear(weight, mask.cpu().to(weight.dtype), bias))
            else:
                dense = nn.Linear(m.in_features, m.out_features)
                dense.weight.data = weight * (1 if mask is None else mask.cpu().to(weight.dtype))
                dense.bias.data = bias.clone()
                layers.append(dense)
        elif isinstance(m, nn.Flatten):
            layers.append(nn.Flatten(m.start_dim, m.end_dim))
        elif isinstance(m, nn.ReLU):
            layers.append(nn.ReLU())
        # (Dropout: the identity at inference)
    return SparseMLP(layers).eval()

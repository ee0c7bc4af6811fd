"""Sparse kernels for pruned fully connected layers: a ticket's round costs what its density says.

A layer below `SPARSE_BELOW` density with `[train] kernels = "auto"` (every
layer with a pruned weight, with `kernels = "sparse"`) keeps its surviving weights as the values of its
mask's CSR structure, and a step computes only with them:

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
summation orders): the choice is part of `TrainConfig`, so of every cache key.
Deterministic: the CPU CSR kernels run in a fixed order on one thread.

`SPARSE_BELOW` is the crossover measured by benchmarks/sparse_speed.py on
LeNet-300-100 at batch 60 (CPU, one thread): below it the sparse step of a
layer is faster than the dense one. On CUDA, and for conv layers, the dense
path stays (the README gives the measurements).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .config import TrainConfig
from .models.layers import plain_mlp
from .pruning import Masks

SPARSE_BELOW = 0.25  # density under which a Linear layer trains sparse with kernels = "auto" (measured)
# ... if it has this many weights: a small layer's call costs more than its arithmetic (the exported 3.6% ticket
# at batch 1, benchmarks/sparse_speed.py on the first machine, with the export's earlier loop: 1.34x its dense
# model with the 1,000-weight output layer dense, 1.16x with it as CSR; in training the difference was noise)
SPARSE_MIN_WEIGHTS = 10_000
EVAL_CHUNK = 256  # examples per sparse product in evaluation: CSR times a wide matrix loses to a dense GEMM


def csr_columns(csr: torch.Tensor, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """W h + b for a CSR W and h of shape (in, batch): the layer in the layout its kernel reads fastest."""
    return torch.sparse.mm(csr, h).add_(bias.unsqueeze(1))


def csr_linear(csr: torch.Tensor, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x Wᵀ + b for a CSR W and x of shape (batch, in), read as it lies (the kernel takes the transposed operand
    as fast as a copied one); a (batch, out) view of a (out, batch)-contiguous result."""
    return csr_columns(csr, x.t(), bias).t()


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


def trains_sparse(kernels: str, mask: torch.Tensor | None) -> bool:
    """Whether a layer with this mask takes the sparse kernels ("dense", "sparse" or "auto")."""
    if mask is None or kernels == "dense":
        return False
    density = float(mask.float().mean())
    if kernels == "auto":
        return density < SPARSE_BELOW and mask.numel() >= SPARSE_MIN_WEIGHTS
    return density < 1.0  # (a dense layer gains nothing)


def chainable(model: nn.Module) -> bool:
    """A plain MLP (`plain_mlp`) whose first layer after any Flatten is a Linear one: what `run_chain` runs."""
    first = next((m for m in model.children() if not isinstance(m, nn.Flatten)), None) if plain_mlp(model) else None
    return isinstance(first, nn.Linear)


def sparse_supported(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
    """Whether `cfg.kernels` may put this model's layers on the sparse kernels: a plain MLP, on the CPU."""
    return cfg.kernels != "dense" and device.type == "cpu" and chainable(model)


class SparseLinear:
    """A mask's CSR structure (row-major, as `Tensor.to_sparse_csr` orders it) and its transpose's."""

    def __init__(self, mask: torch.Tensor, weight: torch.Tensor):
        out_features, in_features = mask.shape
        keep = mask.bool()
        self.flat = keep.reshape(-1).nonzero().squeeze(1)  # positions of the values in the dense weight
        rows = torch.div(self.flat, in_features, rounding_mode="floor")
        cols = self.flat - rows * in_features
        counts = torch.bincount(rows, minlength=out_features)
        crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        self.values = weight.detach().reshape(-1).index_select(0, self.flat).contiguous()
        with warnings.catch_warnings():  # ("beta state": torch's notice, once per process)
            warnings.simplefilter("ignore")
            # (int32 indices: in an A/B on 2026-12-02 they took the sparse round at 3.6% from 0.39x to 0.35x of
            # dense; 2^31 weights in a layer is far off)
            self.csr = torch.sparse_csr_tensor(crow.int(), cols.int(), self.values, (out_features, in_features),
                                               check_invariants=False)
        # Wᵀ: the same values, in the order of the transposed structure.
        order = torch.argsort(cols * out_features + rows)
        counts_t = torch.bincount(cols, minlength=in_features)
        crow_t = torch.cat([counts_t.new_zeros(1), counts_t.cumsum(0)])
        self.perm_t = order
        self.values_t = self.values.index_select(0, order)
        self.csr_t = torch.sparse_csr_tensor(crow_t.int(), rows.index_select(0, order).int(), self.values_t,
                                             (in_features, out_features), check_invariants=False)

    # Activations and gradients stay (features, batch)-contiguous between sparse layers, seen as transposed
    # (batch, features) views: the CSR kernels read that layout fastest, so a chain of them copies nothing.

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x as the backward pass reads it, x Wᵀ + b) for x of shape (batch, in); both are (batch, ·) views."""
        x_t = x.t().contiguous()  # (free when x is such a view already)
        return x_t.t(), csr_columns(self.csr, x_t, bias).t()

    def weight_grad(self, g_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(gᵀ x) at the mask's positions: the values' gradient, for gᵀ of shape (out, batch)."""
        return torch.sparse.sampled_addmm(self.csr, g_t, x, beta=0.0).values()

    def input_grad(self, g_t: torch.Tensor) -> torch.Tensor:
        """g W for gᵀ of shape (out, batch), through Wᵀ's structure (its values refreshed from the layer's)."""
        torch.index_select(self.values, 0, self.perm_t, out=self.values_t)
        return torch.sparse.mm(self.csr_t, g_t).t()

    def write(self, weight: torch.Tensor) -> None:
        """The values into the dense weight's surviving positions (the pruned ones are never touched)."""
        weight.detach().view(-1).index_copy_(0, self.flat, self.values)


class SparseEval:
    """The model's eval-mode forward pass with the layers `trains_sparse` picks as CSR: what evaluation runs.

    Its own structures (never the training step's), filled from a state, or from the model, at `prepare`:
    an overlapped validation thread reads a snapshot while training goes on.
    """

    def __init__(self, model: nn.Module, masks: Masks, kernels: str):
        self.model, self.masks, self.kernels = model, masks, kernels
        self.layers = {name: SparseLinear(masks[name], m.weight) for name, m in model.named_children()
                       if isinstance(m, nn.Linear) and trains_sparse(kernels, masks.get(name))}

    @staticmethod
    def of(model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device) -> SparseEval | None:
        """The sparse forward pass where the step is sparse too; None where evaluation stays dense."""
        if not sparse_supported(model, cfg, device):
            return None
        found = SparseEval(model, masks, cfg.kernels)
        return found if found.layers else None

    def on(self, model: nn.Module) -> SparseEval:
        """The same layers on a copy of the model, with buffers of their own (for another thread)."""
        return SparseEval(model, self.masks, self.kernels)

    @torch.no_grad()
    def prepare(self, state: dict[str, torch.Tensor] | None = None):
        """A forward function of the weights in `state` (default: the model's own, now)."""
        state = self.model.state_dict() if state is None else state
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

    CSR pays where `kernels = "auto"` would train the layer sparse (below the crossover density, with enough
    weights); a small or dense layer stays a dense Linear with its masked weights. The predictions are the dense
    model's (the products sum in another order: logits agree to float tolerance). A network with other layers than
    Flatten, Linear, ReLU and Dropout is refused (conv layers stay dense: the README's performance section has the
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
            if trains_sparse("auto", mask):
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

"""A pruned Linear layer's weight as CSR, and the products the sparse step and evaluation run with it."""

from __future__ import annotations

import warnings

import torch


def csr_columns(csr: torch.Tensor, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """W h + b for a CSR W and h of shape (in, batch): the layer in the layout its kernel reads fastest."""
    return torch.sparse.mm(csr, h).add_(bias.unsqueeze(1))


def csr_linear(csr: torch.Tensor, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x Wᵀ + b for a CSR W and x of shape (batch, in), read as it lies (the kernel takes the transposed operand
    as fast as a copied one); a (batch, out) view of a (out, batch)-contiguous result."""
    return csr_columns(csr, x.t(), bias).t()


class SparseLinear:
    """A mask's CSR structure (row-major, as `Tensor.to_sparse_csr` orders it) and its transpose's."""

    def __init__(self, mask: torch.Tensor, weight: torch.Tensor, transposed: bool = True):
        """`transposed=False`: no Wᵀ (evaluation needs only the forward product)."""
        out_features, in_features = mask.shape
        self.numel = mask.numel()
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
        if not transposed:
            return
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

    def dense(self, t: torch.Tensor) -> torch.Tensor:
        """A tensor over the values (their optimiser state) in the dense weight's shape, 0 at the pruned positions."""
        out = t.new_zeros(self.csr.shape)
        out.view(-1)[self.flat] = t
        return out

    def write(self, weight: torch.Tensor) -> None:
        """The values into the dense weight's surviving positions (the pruned ones are never touched)."""
        weight.detach().view(-1).index_copy_(0, self.flat, self.values)

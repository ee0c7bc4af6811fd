"""Activation layouts of n packed members, and conversions between them."""

from __future__ import annotations

import torch

# Activations of n members live in one of three layouts:
#   "member": one tensor (n, B, ...) — member i's batch is the contiguous slice [i] (batched matmuls);
#   "group":  one tensor (B, n*C, H, W) — member i's channels are [i*C:(i+1)*C] (a grouped convolution);
#   "list":   n tensors (B, ...) — layers run member by member on tensors of the unpacked model's size.

Act = torch.Tensor | list[torch.Tensor]


def convert(h: Act, src: str, dst: str, n: int) -> Act:
    """Activations (or their gradients) of n members from layout `src` to layout `dst`."""
    if src == dst:
        return h
    if dst == "list":
        if src == "member":
            return list(h.unbind(0))
        c = h.shape[1] // n
        return [h[:, i * c:(i + 1) * c].contiguous() for i in range(n)]
    if src == "list":
        return torch.stack(h) if dst == "member" else torch.cat(h, 1)
    if dst == "group":
        return h.transpose(0, 1).reshape(h.shape[1], n * h.shape[2], *h.shape[3:])
    b, nc = h.shape[:2]
    return h.view(b, n, nc // n, *h.shape[2:]).transpose(0, 1).contiguous()


# Grouped convolutions stack all members' activations into one tensor; beyond this size a CPU's caches
# lose more than the one kernel call gains (conv-2 on 28x28, 4 members: 25% slower than member by member).
GROUPED_CONV_MAX_BYTES = 16 << 20

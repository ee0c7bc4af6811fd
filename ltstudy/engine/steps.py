"""One training step (forward, backward, masked gradients, optimiser), two ways, bit for bit the same.

- `AutogradStep` works for every model: autograd, then torch.optim's fused optimiser.
- `LeanStep` is for networks made of Flatten, Linear, ReLU and the seeded Dropout only
  (LeNet-300-100, the paper's MNIST network): it runs the very aten ops autograd runs
  for them (addmm, relu_, log_softmax, nll_loss and their backward kernels), in the
  same order and with the same operand layouts, without building a graph each step, and
  calls the fused Adam kernel directly (SGD goes through torch.optim). The results are
  identical to AutogradStep's, which a test checks bit for bit.

Masks hold exactly with gradients masked alone: a pruned weight is 0 and its gradient
is masked to 0, so Adam's moments and SGD's momentum stay 0 there, and the update
(weight decay included, as it multiplies the weight) is exactly 0 too. So weights are
not re-masked after the step; `pruning.check_masks_hold` verifies it after every round.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .pruning import Masks, weights


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    # Fused kernels where the device has them (CUDA, and CPU in recent torch); foreach otherwise.
    kind = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kind)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, **kind)


class AutogradStep:
    def __init__(self, model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, cfg, device)
        self.masked = list(weights(model, masks).values())
        self.mask_list = list(masks.values())

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.model(xb), yb)
        loss.backward()
        if self.mask_list:
            torch._foreach_mul_([w.grad for w in self.masked], self.mask_list)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()

    def state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.opt.state.get(param, {}))


class LeanStep:
    """See the module docstring. `supports(model)` says whether a model qualifies."""

    @staticmethod
    def supports(model: nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
        from .models import Dropout

        if not isinstance(model, nn.Sequential) or device.type != "cpu":
            return False
        mods = list(model.children())
        if not mods or not isinstance(mods[-1], nn.Linear):
            return False
        return all(isinstance(m, nn.Flatten | nn.Linear | Dropout) or (isinstance(m, nn.ReLU) and m.inplace)
                   for m in mods)

    def __init__(self, model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device):
        self.layers = list(model.children())
        self.linears = [m for m in self.layers if isinstance(m, nn.Linear)]
        params = [p for m in self.linears for p in (m.weight, m.bias)]
        self.params = [p.detach() for p in params]
        self.param_of = {id(p): d for p, d in zip(params, self.params, strict=True)}
        names = {id(m.weight): n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        self.masks = [masks.get(names[id(m.weight)]) for m in self.linears]
        self.cfg = cfg
        self.lr = cfg.lr
        self._one = torch.ones((), device=device)
        if cfg.optimizer == "adam":
            # The state torch.optim.Adam(fused=True) keeps: zero moments and a float32 step count per parameter.
            self.exp_avg = [torch.zeros_like(p) for p in self.params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
            self.steps = [torch.zeros((), dtype=torch.float32, device=device) for _ in self.params]
            self.opt = None
        else:
            self.opt = make_optimizer(params, cfg, device)
            self._grad_params = params

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        if self.opt is not None:
            for group in self.opt.param_groups:
                group["lr"] = lr

    @torch.no_grad()
    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        saved = []
        x = xb
        for m in self.layers:  # forward, keeping what each backward kernel reads
            if isinstance(m, nn.Flatten):
                x = torch.flatten(x, m.start_dim, m.end_dim)
            elif isinstance(m, nn.Linear):
                saved.append(x)
                x = torch.addmm(m.bias, x, m.weight.t())
            elif isinstance(m, nn.ReLU):
                x = torch.relu_(x)
                saved.append(x)
            else:  # the seeded Dropout, as its forward computes it
                if m.training and m.p != 0.0:
                    keep = torch.empty_like(x).bernoulli_(1.0 - m.p, generator=m.generator)
                    scale = 1.0 / (1.0 - m.p)
                    x = x * keep * scale
                    saved.append((keep, scale))
                else:
                    saved.append(None)
        log_probs = torch.log_softmax(x, 1)
        loss, total_weight = torch.ops.aten.nll_loss_forward(log_probs, yb, None, 1, -100)
        g = torch.ops.aten.nll_loss_backward(self._one, log_probs, yb, None, 1, -100, total_weight)
        g = torch.ops.aten._log_softmax_backward_data(g, log_probs, 1, log_probs.dtype)
        grads: list[torch.Tensor] = []
        linear = len(self.linears)
        for m in reversed(self.layers):  # backward: autograd's kernels and layouts (see mm_mat2_backward)
            if isinstance(m, nn.Linear):
                linear -= 1
                inp = saved.pop()
                grads += [g.sum(0), g.t().mm(inp)]  # bias, weight (reversed below)
                if linear > 0:
                    g = g.mm(m.weight)
            elif isinstance(m, nn.ReLU):
                g = torch.ops.aten.threshold_backward(g, saved.pop(), 0)
            elif isinstance(m, nn.Flatten):
                pass  # (the input needs no gradient)
            else:
                drop = saved.pop()
                if drop is not None:
                    keep, scale = drop
                    g = g * scale * keep
        grads.reverse()
        masked = [(grads[2 * i], mask) for i, mask in enumerate(self.masks) if mask is not None]
        if masked:
            torch._foreach_mul_([g for g, _ in masked], [mask for _, mask in masked])
        if self.opt is None:
            torch._foreach_add_(self.steps, 1)
            torch._fused_adam_(self.params, grads, self.exp_avg, self.exp_avg_sq, [], self.steps, amsgrad=False,
                               lr=self.lr, beta1=0.9, beta2=0.999, weight_decay=self.cfg.weight_decay, eps=1e-8,
                               maximize=False)
        else:
            for p, grad in zip(self._grad_params, grads, strict=True):
                p.grad = grad
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return loss

    def state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.opt is not None:
            return dict(self.opt.state.get(param, {}))
        i = next(i for i, p in enumerate(self.params) if p.data_ptr() == param.data_ptr())
        return {"exp_avg": self.exp_avg[i], "exp_avg_sq": self.exp_avg_sq[i], "step": self.steps[i]}


def make_step(model: nn.Module, masks: Masks, cfg: TrainConfig, device: torch.device, lean: bool = True):
    """The fastest step that gives autograd's numbers for this model."""
    if lean and LeanStep.supports(model, cfg, device):
        return LeanStep(model, masks, cfg, device)
    return AutogradStep(model, masks, cfg, device)

"""Tickets on disk: a round's mask, the weights it started from, and the weights it trained to.

One folder per round (`round_03/`):

- `mask.safetensors`: a bool tensor per pruned layer (True = kept);
- `init.safetensors`: the full state dict the round started from, masked (θ_k ⊙ m for
  a rewound ticket, a fresh draw ⊙ m for the random re-init control, ...);
- `trained.safetensors`: the state dict at the end of the round's training;
- `ticket.json`: the config, the round's record, and how it was trained (start and
  end iteration, data and dropout seeds, constant learning rate, and the input
  standardisation), so it can be evaluated and retrained exactly.

One call loads it into the project's model:

    from ltstudy.engine.export import load_ticket
    ticket = load_ticket("tickets/round_05")
    model = ticket.model()                 # the initial weights, masked (ticket.model("trained"): the trained ones)
    logits = model(ticket.preprocess(x))   # x as the dataset's loader returns it, standardised as in training
    fast = ticket.sparse_model()           # the trained weights as CSR, for inference on the CPU
    result = ticket.retrain()              # the round's training again: the same numbers on the CPU
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import strict_json
from .callbacks import Callback
from .config import TicketConfig
from .rounds import Masks, RoundJob, RoundState


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    # (safetensors' own save_file writes mode 0600 whatever the umask; tickets are meant to be shared)
    data = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=metadata)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def save_round(folder: str | os.PathLike, cfg: TicketConfig, record: dict[str, Any], masks: Masks,
               start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], training: dict[str, Any]) -> Path:
    """Write one round's ticket into folder/round_NN; returns that path."""
    out = Path(folder) / f"round_{int(record['round']):02d}"
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "mask.safetensors", {n: m.bool() for n, m in masks.items()})
    _write(out / "init.safetensors", start)
    _write(out / "trained.safetensors", trained)
    doc = {"config": cfg.to_dict(), "round": {k: v for k, v in record.items() if k != "layer_density"},
           "layer_density": record.get("layer_density", {}), "training": training, "format": 1}
    (out / "ticket.json").write_text(strict_json.dumps(doc, indent=2) + "\n")
    return out


@dataclass
class Ticket:
    """A saved round, as `load_ticket` reads it: its config, its record, how it was trained, its masks and weights.

    `masks` are bool tensors by layer; `init` and `trained` are state dicts (the weights the round started from,
    masked, and those it trained to); `record` is the round's numbers (density, accuracies, ...); `training` what
    `retrain` needs to train it again (seeds, start and end iterations).
    """

    path: Path
    config: TicketConfig
    record: dict[str, Any]
    training: dict[str, Any]
    masks: dict[str, torch.Tensor]  # bool
    init: dict[str, torch.Tensor]
    trained: dict[str, torch.Tensor]

    def model(self, weights: str = "init", device: str | torch.device = "cpu") -> nn.Module:
        """The project's model for this ticket's config, holding its `init` (or `trained`) weights."""
        from .models import build_model
        from .registry import DATASETS

        net = build_model(self.config.model.name, tuple(self.training["input_shape"]),
                          self.training.get("num_classes", DATASETS.get(self.config.data.name).num_classes),
                          self.config.model.dropout)
        net.load_state_dict({"init": self.init, "trained": self.trained}[weights])
        return net.to(device)

    def sparse_model(self, weights: str = "trained") -> nn.Module:
        """An inference model on the CPU with the pruned layers as CSR (`sparse.sparse_model`): the dense model's
        predictions, at a cost that scales with the ticket's density. Fully connected networks only."""
        from .sparse import sparse_model

        return sparse_model(self.model(weights), self.float_masks())

    def float_masks(self, device: str | torch.device = "cpu") -> Masks:
        return {n: m.to(device=device, dtype=torch.float32) for n, m in self.masks.items()}

    def preprocess(self, x: Any) -> torch.Tensor:
        """Inputs as the dataset's loader returns them, (n, channels, height, width), numpy or torch, into what the
        model was trained and evaluated on: each channel standardised with the training split's mean and standard
        deviation, saved with the ticket (`training["input"]`), in float32 as the loader does, so
        `ticket.model("trained")(ticket.preprocess(x))` gives the recorded accuracies."""
        stats = self.training.get("input")
        if not stats:
            raise ValueError(f"{self.path} was saved without its input statistics (before ltstudy saved them); "
                             "normalise with ltstudy.engine.data.load_dataset(ticket.config.data), or save it again")
        x = torch.as_tensor(x, dtype=torch.float32)
        mean, std = (torch.tensor(stats[k], dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
                     for k in ("mean", "std"))
        return (x - mean) / std

    def retrain(self, data=None, threads: int | None = 1):
        """Train the round again from its initial weights, exactly as it was trained; returns the TrainResult.

        It trains with `threads` torch threads, as the CLI does (study/threads.py: small batches run many times
        slower with torch's default of one per core), and gives the caller's count back afterwards; None trains
        with the caller's.
        """
        from .data import load_dataset
        from .device import resolve_device
        from .training import train

        device = resolve_device(self.config.device)
        data = data if data is not None else load_dataset(self.config.data, device)
        t = self.training
        job = RoundJob(int(self.record["round"]), self.model("init", device), self.float_masks(device),
                       self.config.train, self.config.resolve_schedule(len(data.train)), t["data_seed"],
                       t["dropout_seed"], t["start"], t["end"], constant_lr=t["constant_lr"])
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            return train(job, data)
        finally:
            torch.set_num_threads(before)


def load_ticket(path: str | os.PathLike) -> Ticket:
    """A saved round (a `round_NN` folder) as a Ticket; see the module docstring."""
    path = Path(path)
    doc = json.loads((path / "ticket.json").read_text())
    return Ticket(path, TicketConfig.from_dict(doc["config"]), doc["round"], doc["training"],
                  _read(path / "mask.safetensors"), _read(path / "init.safetensors"),
                  _read(path / "trained.safetensors"))


class TicketSaver(Callback):
    """A search callback that writes every round it is given (or those in `rounds`) into `folder`."""

    def __init__(self, folder: str | os.PathLike, cfg: TicketConfig, rounds: set[int] | None = None):
        self.folder, self.cfg, self.rounds = Path(folder), cfg, rounds
        self.written: list[Path] = []

    def on_state(self, state: RoundState) -> None:
        if self.rounds is None or state.record.round in self.rounds:
            self.written.append(save_round(self.folder, self.cfg, state.record.to_dict(), state.masks, state.start,
                                           state.trained, state.training))

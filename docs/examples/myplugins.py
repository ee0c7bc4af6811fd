"""A user's additions to ltstudy, in one file: a model, a dataset, a re-init strategy and an objective.

Used from a study file with `[study] plugins = ["myplugins"]` (this file beside the study file), or with
`ltstudy ticket --plugin myplugins ...`. docs/extending.md walks through it; a test runs it.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ltstudy.engine.registry import DATASETS, MODELS, REINITS
from ltstudy.engine.reinit.base import Reinit
from ltstudy.study.objectives import OBJECTIVES
from ltstudy.study.objectives.base import Objective


def build_mlp(input_shape, num_classes, dropout):
    """A model builder: (input_shape, num_classes, dropout) -> nn.Module (ltstudy initialises it as the paper)."""
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))


def load_blobs(cfg):
    """A dataset loader: DataConfig -> (train_x, train_y, test_x, test_y), x shaped (n, channels, height, width)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 1, 4, 4)).astype(np.float32)

    def draw(n):
        y = rng.integers(0, 4, n)
        return (centres[y] + 0.8 * rng.normal(size=(n, 1, 4, 4))).astype(np.float32), y

    return (*draw(400), *draw(200))


class ScaledRewind(Reinit):
    """Rewind the survivors to θ_k with their weights halved (a re-init of your own)."""

    rewinds = True  # it starts from θ_k, so round 0 captures θ_k when k > 0

    def reset(self, model, start):
        model.load_state_dict({k: v * 0.5 if k.endswith("weight") else v for k, v in start.theta_k().items()})


class MeanAccuracy(Objective):
    """mean_accuracy (maximise): the mean validation accuracy over a search's rounds."""

    direction = "maximize"
    meaning = "mean validation accuracy over the search's rounds"

    def value(self, rounds, epsilon, key="val_accuracy"):
        return sum(r[key] for r in rounds) / len(rounds)


MODELS.add("my-mlp", "myplugins:build_mlp", "a 1-hidden-layer MLP")
DATASETS.add("blobs", load_blobs, "four Gaussian blobs in 4x4 images", input_shape=(1, 4, 4), num_classes=4,
             default_val_size=40)
REINITS.add("scaled-rewind", ScaledRewind)
OBJECTIVES.add("mean_accuracy", MeanAccuracy)

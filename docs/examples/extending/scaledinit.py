from ltstudy.engine import pruning
from ltstudy.engine.masks.at_init import AtInit
from ltstudy.engine.registry import AT_INIT


@AT_INIT.register("scaled-magnitude")
class ScaledMagnitude(AtInit):
    """Each weight's |θ| over its layer's mean |θ| at initialisation, ranked over every layer."""

    method = "scaled magnitude"

    def raw_scores(self, model, names, data, seed):
        return {n: w.detach().abs() / w.detach().abs().mean() for n, w in pruning.weights(model, names).items()}

from ltstudy.engine.metrics import RoundMetric
from ltstudy.engine.registry import METRICS


@METRICS.register("weight_norm")
class WeightNorm(RoundMetric):
    """The L2 norm of the weights a round's mask keeps, after its training (it reads the round's weights)."""

    needs_state = True

    def compute(self, finished):
        s = finished.state
        total = sum(float(((s.trained[f"{n}.weight"] * m.float()) ** 2).sum()) for n, m in s.masks.items())
        return {"weight_norm": total ** 0.5}

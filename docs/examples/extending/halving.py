from ltstudy.engine.registry import REINITS
from ltstudy.engine.reinit.base import Reinit


@REINITS.register("halved-rewind")
class HalvedRewind(Reinit):
    """Rewind the survivors to θ_k with every weight halved."""

    rewinds = True

    def reset(self, model, start):
        model.load_state_dict({k: v * 0.5 if k.endswith("weight") else v for k, v in start.theta_k().items()})

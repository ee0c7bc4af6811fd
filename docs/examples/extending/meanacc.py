from ltstudy.study.objectives import OBJECTIVES
from ltstudy.study.objectives.base import Objective


@OBJECTIVES.register("mean_accuracy")
class MeanAccuracy(Objective):
    """mean_accuracy (maximise): the mean validation accuracy over a search's rounds."""

    direction = "maximize"
    meaning = "mean validation accuracy over the search's rounds"

    def value(self, rounds, epsilon, key="val_accuracy"):
        return sum(r[key] for r in rounds) / len(rounds)

"""ltstudy: lottery-ticket studies with Optuna and MLflow.

The engine (config, data, models, pruning, training, ticket) imports neither
optuna nor mlflow; the study layer (study, tracking, reports) adds them.
"""

__version__ = "0.1.0"

"""ltstudy: lottery-ticket studies with Optuna and MLflow.

`ltstudy.engine` is the ticket-search library (it imports neither optuna nor
mlflow); `ltstudy.study` puts Optuna and MLflow on top; `ltstudy.cli` is the
command line.
"""

__version__ = "0.1.0"

"""The study layer: Optuna searches over ticket-search settings, tracked in MLflow, and their reports."""

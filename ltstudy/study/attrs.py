"""Names of the attributes ltstudy stores on Optuna studies and trials.

They link Optuna to MLflow (run ids) and keep what reports need without
MLflow (each trial's rounds and settings).
"""

PARENT_ATTR = "mlflow_parent_run_id"  # study: the MLflow parent run
EXPERIMENT_ATTR = "mlflow_experiment_id"  # study: the MLflow experiment
CODE_ATTR = "code"  # study: {module: digest} of the user's code it was created with (user_code.py)
PARETO_ATTR = "pareto_trials"  # study: trial numbers currently tagged pareto=true
RUN_ATTR = "mlflow_run_id"  # trial: its MLflow child run
LINEAGE_ATTR = "mlflow_lineage_run_ids"  # trial: runs of earlier attempts (retries), oldest first
NUMBER_ATTR = "trial_number"  # trial: its own number, copied into a retry so it knows its predecessor
OWNER_ATTR = "worker"  # trial: host:pid:start-time of the process running it (owners.py)

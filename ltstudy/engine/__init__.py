"""The ticket-search engine: typed config, registries, data, models, methods, masked training, IMP.

Nothing here imports optuna or mlflow. The pieces, one concept per module:
`config` (the typed config), `registry` (datasets, models and methods by name),
`rounds` (jobs, results, levels and states), `callbacks` (what watches a
search), `search` (the protocol every search implements), `round_protocol`
(what a round does besides stepping), `training` (the solo trainer), `steps`
(the training step), `pruning`, `reinit/`, `masks/`, `scopes/` (the methods),
`ticket` (IMP, and its branches at every level), `branches/` (the controls and
baselines, one file each), `controls` (one control alone), `metrics` (per-round
numbers), `packing/` (many rounds side by side), `drivers` (the one pump, and
what trains its jobs), `cache`, `hashing`, `export`.
"""

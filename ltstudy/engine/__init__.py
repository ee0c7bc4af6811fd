"""The ticket-search engine: typed config, registries, data, models, methods, masked training, IMP.

Nothing here imports optuna or mlflow. The pieces, one concept per module:
`config` (the typed config), `registry` (datasets, models and methods by name),
`rounds` (jobs, results and the callback protocol), `round_protocol` (what a
round does besides stepping), `training` (the solo trainer), `steps` (the
training step), `pruning`, `reinit/`, `masks/`, `scopes/` (the methods),
`ticket` (IMP), `controls` (the paper's controls), `packing/` (many rounds side
by side), `drivers` (what runs searches), `cache`, `hashing`, `export`.
"""

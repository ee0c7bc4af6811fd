"""The ticket-search engine: typed config, data and model registries, pruning, masked training, IMP.

Nothing here imports optuna or mlflow; the study layer (`ltstudy.study`) drives
the engine through `TicketSearch.run(on_round=...)`.
"""

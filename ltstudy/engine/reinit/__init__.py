"""Re-init strategies: how the survivors of a pruning step start the next round, one class per file.

Registered in `registry.REINITS`; `base.Reinit` says what a strategy declares.
"""

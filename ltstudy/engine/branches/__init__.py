"""Branches: the controls and baselines trained at each level of a ticket's search, one class per file.

`base.Branch` says what a branch is; registered in `registry.CONTROLS`.
"""

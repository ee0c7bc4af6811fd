"""Mask rules: how a round's mask is chosen, one class per file; registered in `registry.MASKS`."""

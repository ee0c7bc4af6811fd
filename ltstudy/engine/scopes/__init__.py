"""Pruning scopes: which layers share one magnitude threshold, one class per file; in `registry.SCOPES`."""

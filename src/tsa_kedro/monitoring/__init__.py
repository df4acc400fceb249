"""Drift monitoring: the training reference profile and its comparison with new
orders (docs/source/monitoring.md)."""

"""Monotone B-spline calibration: the R script, its rpy2 bridge and a pure-Python evaluator."""

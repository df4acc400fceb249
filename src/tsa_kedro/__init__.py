"""tsa_kedro: a Kedro pipeline that trains, calibrates, packages and registers a
two-sequence Temporal Self-Attention fraud classifier."""

__version__ = "0.1.0"

"""PyTorch model code, importable without Kedro."""

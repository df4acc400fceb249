"""Raw-order validation, fitted transforms and vectorised tensor building (no Kedro)."""

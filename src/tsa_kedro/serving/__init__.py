"""The inference handler shipped in model.tar.gz."""

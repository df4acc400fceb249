"""Synthetic order streams with planted, history-only fraud patterns."""

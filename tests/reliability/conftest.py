"""The tiny model bundle of tests/serving, for the packaging tests here."""

from tests.serving.conftest import tiny_model  # noqa: F401 - a shared fixture

"""Entry point of the SageMaker PyTorch serving container (``code/inference.py``).

The container puts ``code/`` on ``sys.path``, so the bundled ``tsa_kedro`` package
imports from there; ``SAGEMAKER_PROGRAM`` is ``inference.py``.
"""

from tsa_kedro.serving.handler import input_fn, model_fn, output_fn, predict_fn

__all__ = ["input_fn", "model_fn", "output_fn", "predict_fn"]

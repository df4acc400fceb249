"""Training of the TSA classifier, free of Kedro: model inputs (``data``), the loop
(``loop``), checkpoints (``checkpoint``), distribution (``distributed``), metrics
(``metrics``) and the gradient-boosted trees baseline (``baseline``)."""

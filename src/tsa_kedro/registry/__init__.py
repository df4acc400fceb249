"""Model registration: the metrics gate, the MLflow and SageMaker model registries."""

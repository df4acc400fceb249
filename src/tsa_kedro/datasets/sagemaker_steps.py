"""Datasets of the ``sagemaker`` environment's score step (docs/source/scoring.md).

* :class:`PerHostJSONDataset`: a JSON file per host when the step runs on several
  hosts (``score_summary-algo-1.json``, ...), one file otherwise;
* :class:`ExecutionPickleDataset`: an object that one step hands to the next, stored
  under the pipeline execution's id (the score step's loaded model).
"""

from __future__ import annotations

import os
from typing import Any

from kedro_datasets.json import JSONDataset
from kedro_sagemaker.constants import KEDRO_SAGEMAKER_EXECUTION_ARN
from kedro_sagemaker.datasets import CloudpickleDataset

from tsa_kedro.hosts import current_shard


class PerHostJSONDataset(JSONDataset):
    """``JSONDataset`` whose file name gets ``-<host>`` before its suffix when
    SageMaker's host list (:func:`tsa_kedro.hosts.current_shard`)
    names more than one host, so that the hosts of one step never write the same
    file.

    Raises:
        ShardConfigError: an unusable host list (naming the file).
    """

    def __init__(self, *, filepath: str, **kwargs: Any) -> None:
        super().__init__(filepath=current_shard().file_name(filepath), **kwargs)


class ExecutionPickleDataset(CloudpickleDataset):
    """An object pickled to ``<root>/<execution id>/<dataset_name>.bin``.

    The id is the last part of ``$KEDRO_SAGEMAKER_EXECUTION_ARN``, which the
    plugin sets in every step (``local`` without it), so concurrent executions
    never read each other's objects. Every host of a multi-host step loads the same
    object.

    Args:
        root: the folder (an ``s3://`` URI on SageMaker) that holds the objects.
        dataset_name: the file name, without ``.bin``.
    """

    def __init__(self, root: str, dataset_name: str) -> None:
        execution = os.getenv(KEDRO_SAGEMAKER_EXECUTION_ARN, "local")
        super().__init__(
            bucket=None, dataset_name=dataset_name, run_id=execution.split(":")[-1]
        )
        self.root = root.rstrip("/")

    def _get_target_path(self) -> str:
        return f"{self.root}/{self.run_id}/{self.dataset_name}.bin"

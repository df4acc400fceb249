# The image of every SageMaker step (docs/source/deployment.md).
#
#   docker build -t <registry>/tsa-kedro:<tag> .   (then push it and set TSA_SAGEMAKER_IMAGE)
#
# Processing steps run `kedro sagemaker -e <env> execute --node=<name>` (the step's own
# entrypoint); training steps run `train` (docker/train -> `kedro sagemaker entrypoint`).
# Python 3.11: kedro-datasets 7 needs Python >= 3.10 (the plugin's template uses 3.9).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# torch's CUDA build for the GPU steps: torch is installed first and alone, from the
# PyTorch CUDA index, at the version pinned in pyproject.toml; requirements.lock does
# not list torch, so nothing later replaces it.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KEDRO_DISABLE_TELEMETRY=1 \
    SAGEMAKER_SUPPRESS_V2_WARNING=1 \
    KEDRO_LOGGING_CONFIG=/home/kedro/conf/sagemaker/logging.yml

# R and the Debian packages of the calibration stage: the list scripts/setup.sh installs.
COPY scripts/apt-runtime.txt /tmp/apt-runtime.txt
RUN apt-get update \
    && sed 's/#.*//' /tmp/apt-runtime.txt | awk 'NF' \
       | xargs env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/apt-runtime.txt

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && python -c "import torch, sys; sys.exit(torch.version.cuda is None)"

COPY requirements.lock /tmp/requirements.lock
RUN pip install -r /tmp/requirements.lock && rm /tmp/requirements.lock

WORKDIR /home/kedro
COPY . .
RUN pip install --no-deps . \
    && install -m 0755 docker/train /usr/local/bin/train \
    && python -c "import tsa_kedro.deploy.plugin, rpy2.robjects"

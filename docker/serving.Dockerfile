# The image of the real-time endpoint and of batch transform: one model bundle behind
# the SageMaker inference contract (docs/source/serving.md, "Local endpoint").
#
#   docker build -f docker/serving.Dockerfile -t <registry>/tsa-kedro-serving:<tag> .
#   docker run -p 8080:8080 -v "$PWD/model:/opt/ml/model:ro" <image>
#
# SageMaker unpacks model.tar.gz into /opt/ml/model and runs `<image> serve`:
# docker/serve -> `python -m tsa_kedro.serving.server` on 0.0.0.0:8080. CMD does the
# same for a plain `docker run`. Only the serving runtime is installed: no Kedro, R,
# MLflow or AWS SDK.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# CPU torch by default: on CPU the handler scores through model.onnx (ONNX Runtime);
# torch builds the model and is the checked fallback. A GPU endpoint:
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# The runtime at the versions of requirements.lock (the lock as constraints, so the
# dependencies of the runtime are pinned too); the lock does not list torch.
COPY docker/serving-requirements.txt requirements.lock /tmp/
RUN pip install -r /tmp/serving-requirements.txt -c /tmp/requirements.lock \
    && rm /tmp/serving-requirements.txt /tmp/requirements.lock

WORKDIR /opt/program
COPY pyproject.toml README.md ./
COPY src ./src
COPY docker/serve /tmp/serve
RUN pip install --no-deps . \
    && install -m 0755 /tmp/serve /usr/local/bin/serve \
    && rm -rf /tmp/serve src \
    && python -c "import tsa_kedro.serving.server, tsa_kedro.serving.handler, gunicorn, onnxruntime" \
    && useradd --system --no-create-home --shell /usr/sbin/nologin model-server

USER model-server
EXPOSE 8080
CMD ["serve"]

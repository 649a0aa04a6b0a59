# syntax=docker/dockerfile:1
# KServe custom predictor: `python -m predictors` (kserve.ModelServer over startup_recs.serving).
# The InferenceService passes kserve's flags and ours as container args, e.g.
#   --http_port=8080 --models-uri=s3://models/startup_developer
# Build from the repository root: make images

FROM python:3.11.13-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/lock.txt requirements/lock.txt
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
 && pip install -r requirements/lock.txt
COPY . .
RUN pip install --no-deps . \
 && python -c "import kserve, startup_recs; print('startup_recs', startup_recs.__version__, 'kserve', kserve.__version__)"

FROM python:3.11.13-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="startup-recs-predictor" \
      org.opencontainers.image.description="startup-recs KServe custom predictor" \
      org.opencontainers.image.source="https://github.com/startup-recs/startup-recs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 recs \
 && useradd --system --uid 10001 --gid recs --home-dir /home/recs --create-home --shell /usr/sbin/nologin recs
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/recs
WORKDIR /home/recs
USER 10001:10001
# 8080: REST (V1, V2, legacy routes, /metrics); 8081: gRPC (V2).
EXPOSE 8080 8081
# Liveness of the ModelServer itself (Kubernetes uses the InferenceService's own probes).
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["python", "-m", "predictors"]

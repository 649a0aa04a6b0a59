# syntax=docker/dockerfile:1
# CPU image for every pipeline step except two-tower training (KFP components run
# `python -c ...` / `recs ...` inside it; KFP supplies the command, so there is no ENTRYPOINT).
# Build from the repository root:  make images   (tags come from startup_recs.images)
#
# The base is pinned by tag (python:3.11.13-slim-bookworm, the same in all three images; a test
# keeps them equal). To pin by digest as well, append @sha256:<digest> from your registry mirror
# to every FROM line; Dependabot/Renovate can keep both current.

# ---- builder: resolve the locked dependencies into /opt/venv -------------------------------------
FROM python:3.11.13-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The lock file alone first, so the (large) dependency layer is cached until the lock changes.
COPY requirements/lock.txt requirements/lock.txt
# torch from the CPU index first: the PyPI torch wheel for Linux is the multi-GB CUDA build.
# The lock's `torch==2.13.0` is then already satisfied by 2.13.0+cpu.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
 && pip install -r requirements/lock.txt
# Then the project itself (.dockerignore admits only pyproject, README, src/ and the adapters).
COPY . .
RUN pip install --no-deps . \
 && python -c "import startup_recs, startup_recs.cli; print('startup_recs', startup_recs.__version__)"

# ---- runtime: the venv on a clean base, non-root ------------------------------------------------
FROM python:3.11.13-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="startup-recs-base" \
      org.opencontainers.image.description="startup-recs pipeline steps (CPU)" \
      org.opencontainers.image.source="https://github.com/startup-recs/startup-recs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 recs \
 && useradd --system --uid 10001 --gid recs --home-dir /home/recs --create-home --shell /usr/sbin/nologin recs
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=2 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/recs
WORKDIR /home/recs
USER 10001:10001
# Batch steps: Kubernetes watches the process exit code, not a health endpoint.
HEALTHCHECK NONE
CMD ["recs", "--help"]

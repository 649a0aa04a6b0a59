# syntax=docker/dockerfile:1
# GPU image for the two-tower step (KFP, on the GPU node pool) and the PyTorchJob
# (manifests/base/training/pytorchjob-two-tower.yaml, `torchrun ... recs train two-tower`).
# The CUDA build of the *same* torch version as requirements/lock.txt (2.13.0). The CUDA runtime
# libraries come as pip wheels (nvidia-*) with torch; only the node's NVIDIA driver is needed, so
# the base stays the plain Python image. Build from the repository root: make images
#
# TORCH_CUDA selects the PyTorch wheel index (https://download.pytorch.org/whl/<TORCH_CUDA>); pick
# a CUDA variant published for torch 2.13.0 and supported by the node driver.

FROM python:3.11.13-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/lock.txt requirements/lock.txt
ARG TORCH_CUDA=cu128
# REQUIRE_CUDA=0 only for kind/minikube (no GPU there): scripts/images.sh builds the same image
# with TORCH_CUDA=cpu so the two-tower step runs on CPU without pulling GBs of CUDA wheels.
ARG REQUIRE_CUDA=1
# CUDA torch first (same version as the lock, local tag +cuXXX), then the rest of the lock: pip
# treats `torch==2.13.0` as satisfied by 2.13.0+cuXXX and leaves it alone.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" "torch==2.13.0" \
 && pip install -r requirements/lock.txt \
 && python -c "import os, torch; v = torch.version.cuda; assert v or os.environ['REQUIRE_CUDA'] == '0', 'CPU torch in the GPU image'; print('torch', torch.__version__, 'cuda', v)"
COPY . .
RUN pip install --no-deps . \
 && python -c "import startup_recs, startup_recs.cli; print('startup_recs', startup_recs.__version__)"

FROM python:3.11.13-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="startup-recs-trainer-gpu" \
      org.opencontainers.image.description="startup-recs two-tower training (CUDA torch)" \
      org.opencontainers.image.source="https://github.com/startup-recs/startup-recs" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 recs \
 && useradd --system --uid 10001 --gid recs --home-dir /home/recs --create-home --shell /usr/sbin/nologin recs
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/recs \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /home/recs
USER 10001:10001
HEALTHCHECK NONE
CMD ["recs", "train", "two-tower", "--help"]

#!/usr/bin/env bash
# make minikube-up: a minikube profile with KFP, KServe, MinIO and Secrets (same stack as kind).
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
need minikube kubectl python3 git
MINIKUBE_CPUS="${MINIKUBE_CPUS:-6}"
MINIKUBE_MEMORY="${MINIKUBE_MEMORY:-12g}"

log "minikube profile ${MINIKUBE_PROFILE} (${MINIKUBE_CPUS} CPUs, ${MINIKUBE_MEMORY})"
if minikube status -p "${MINIKUBE_PROFILE}" >/dev/null 2>&1; then
  info "running; reusing it"
else
  minikube start -p "${MINIKUBE_PROFILE}" --cpus="${MINIKUBE_CPUS}" --memory="${MINIKUBE_MEMORY}" \
    --kubernetes-version=v1.32.2 --wait=all --wait-timeout="${WAIT_SHORT}s"
fi
kubectl config use-context "${MINIKUBE_PROFILE}" >/dev/null
kubectl wait --for=condition=Ready node --all --timeout="${WAIT_SHORT}s"

"${ROOT}/scripts/cluster/platform.sh" minikube
info "minikube: load images with 'scripts/images.sh load-minikube', then follow docs/cluster.md (demo)"

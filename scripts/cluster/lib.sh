#!/usr/bin/env bash
# shellcheck disable=SC2034  # the variables here are used by the scripts that source this file
# Shared settings and helpers of the local-cluster scripts (sourced, not run).
# Every pinned version of a third-party component lives here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ROOT

# --- pinned versions ------------------------------------------------------------------------------
# Kubeflow Pipelines standalone (backend manifests tag; SDK in the lock: kfp 2.17.3).
KFP_VERSION="${KFP_VERSION:-2.17.0}"
# KServe (controller, CRDs and cluster resources at this tag; SDK in the lock: kserve 0.21.0).
KSERVE_VERSION="${KSERVE_VERSION:-v0.20.0}"
# cert-manager: the version KServe v0.20.0 installs with (kserve-deps.env).
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.17.0}"

KFP_CLUSTER_SCOPED="github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=${KFP_VERSION}"
KFP_PLATFORM_AGNOSTIC="github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=${KFP_VERSION}"
CERT_MANAGER_URL="https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
KSERVE_BASE_URL="https://raw.githubusercontent.com/kserve/kserve/${KSERVE_VERSION}/install/${KSERVE_VERSION}"

KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-startup-recs}"
MINIKUBE_PROFILE="${MINIKUBE_PROFILE:-startup-recs}"
NS="${RECS_NAMESPACE:-recs}"
KFP_NS=kubeflow

# Timeouts (seconds) of the waits; raise them on a slow machine or network.
WAIT_SHORT="${WAIT_SHORT:-300}"
WAIT_LONG="${WAIT_LONG:-1200}"

PY="${PY:-${ROOT}/.venv/bin/python}"
RECS="${RECS:-${ROOT}/.venv/bin/recs}"

# --- helpers --------------------------------------------------------------------------------------
log() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need() {
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is not installed (see docs/cluster.md, prerequisites)"
  done
}

# Image reference of KIND (base|trainer-gpu|predictor): startup_recs.core.images, the one source.
image_ref() { PYTHONPATH="${ROOT}/src" python3 -m startup_recs.core.images "$1"; }

# Print why pods of a namespace are not ready (on a failed wait).
explain_ns() {
  local ns="$1"
  printf '\n--- pods in %s ---\n' "$ns" >&2
  kubectl -n "$ns" get pods -o wide >&2 || true
  printf '\n--- recent events in %s ---\n' "$ns" >&2
  kubectl -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -25 >&2 || true
}

# wait_deployments NS TIMEOUT [NAME...]: every (or each named) Deployment is Available.
wait_deployments() {
  local ns="$1" timeout="$2"; shift 2
  local what=(deployment --all)
  if [ $# -gt 0 ]; then what=("${@/#/deployment/}"); fi
  info "waiting up to ${timeout}s for ${what[*]} in namespace ${ns} to be Available ..."
  if ! kubectl -n "$ns" wait --for=condition=Available "${what[@]}" --timeout="${timeout}s"; then
    explain_ns "$ns"; die "Deployments in ${ns} not Available after ${timeout}s"
  fi
}

# wait_crd NAME: a CustomResourceDefinition is Established.
wait_crd() {
  info "waiting for CRD $1 to be Established ..."
  local i
  for i in $(seq 1 30); do
    kubectl get crd "$1" >/dev/null 2>&1 && break
    sleep 2
  done
  kubectl wait --for=condition=Established "crd/$1" --timeout=120s >/dev/null || die "CRD $1 not Established"
}

# retry N SECONDS CMD...: admission webhooks answer a little after their Deployment is Available.
retry() {
  local n="$1" delay="$2" i; shift 2
  for i in $(seq 1 "$n"); do
    if "$@"; then return 0; fi
    info "attempt $i/$n failed: $*; retrying in ${delay}s"
    sleep "$delay"
  done
  return 1
}

# port_forward NS TARGET LOCAL:REMOTE -> starts kubectl port-forward in the background, waits until
# the local port answers, and registers its cleanup on exit. Sets PF_PIDS.
PF_PIDS=()
cleanup_port_forwards() {
  local pid
  for pid in "${PF_PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
}
trap cleanup_port_forwards EXIT
port_forward() {
  local ns="$1" target="$2" ports="$3" local_port="${3%%:*}" i
  info "port-forward ${ns}/${target} ${ports}"
  kubectl -n "$ns" port-forward "$target" "$ports" >/tmp/recs-pf-"$local_port".log 2>&1 &
  PF_PIDS+=("$!")
  for i in $(seq 1 60); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$local_port") 2>/dev/null; then return 0; fi
    sleep 1
  done
  cat /tmp/recs-pf-"$local_port".log >&2
  die "port-forward to ${ns}/${target} did not open 127.0.0.1:${local_port}"
}

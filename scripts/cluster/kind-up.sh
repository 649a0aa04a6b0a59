#!/usr/bin/env bash
# make kind-up: a kind cluster (manifests/kind/cluster.yaml) with KFP, KServe, MinIO and Secrets.
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
need docker kind kubectl python3 git
docker info >/dev/null 2>&1 || die "Docker is not running (kind needs it)"

log "kind cluster ${KIND_CLUSTER_NAME}"
if kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  info "exists; reusing it"
else
  kind create cluster --name "${KIND_CLUSTER_NAME}" --config "${ROOT}/manifests/kind/cluster.yaml" --wait "${WAIT_SHORT}s"
fi
kubectl config use-context "kind-${KIND_CLUSTER_NAME}" >/dev/null
info "waiting for nodes to be Ready ..."
kubectl wait --for=condition=Ready node --all --timeout="${WAIT_SHORT}s"

"${ROOT}/scripts/cluster/platform.sh" kind

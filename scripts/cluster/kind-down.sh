#!/usr/bin/env bash
# make kind-down: delete the kind cluster (and everything in it). Local env files stay.
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
need kind
if kind get clusters 2>/dev/null | grep -qx "${KIND_CLUSTER_NAME}"; then
  kind delete cluster --name "${KIND_CLUSTER_NAME}"
else
  info "no kind cluster ${KIND_CLUSTER_NAME}; nothing to do"
fi

#!/usr/bin/env bash
# make minikube-down: delete the minikube profile.
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
need minikube
minikube delete -p "${MINIKUBE_PROFILE}"

#!/usr/bin/env bash
# images.sh build | build-local | push REGISTRY | load-kind | load-minikube
# Image names and tags come from startup_recs.core.images (python -m startup_recs.core.images): one source
# for this script, the pipeline's base_image and the manifests' kustomize images:.
#   build          all three images for real clusters (trainer-gpu with CUDA torch)
#   build-local    the same, but trainer-gpu with CPU torch (kind/minikube have no GPU; saves GBs)
#   push REGISTRY  tag the built images for REGISTRY and push them
#   load-kind / load-minikube   side-load the built images into the local cluster's nodes
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/cluster/lib.sh"
need docker python3
cmd="${1:?usage: images.sh build|build-local|push REGISTRY|load-kind|load-minikube}"
KINDS=(base trainer-gpu predictor)
TORCH_CUDA="${TORCH_CUDA:-cu128}"

build() {
  local cuda="$1" require="$2" k ref
  for k in "${KINDS[@]}"; do
    ref="$(image_ref "$k")"
    log "build ${ref}  (images/${k}.Dockerfile)"
    local extra=()
    if [ "$k" = trainer-gpu ]; then extra=(--build-arg "TORCH_CUDA=${cuda}" --build-arg "REQUIRE_CUDA=${require}"); fi
    DOCKER_BUILDKIT=1 docker build -f "${ROOT}/images/${k}.Dockerfile" -t "${ref}" "${extra[@]}" "${ROOT}"
  done
}

case "$cmd" in
  build) build "${TORCH_CUDA}" 1 ;;
  build-local) build cpu 0 ;;
  push)
    registry="${2:?usage: images.sh push REGISTRY (e.g. ghcr.io/you or localhost:5001)}"
    for k in "${KINDS[@]}"; do
      src="$(image_ref "$k")"
      dst="$(RECS_IMAGE_REGISTRY="${registry}" image_ref "$k")"
      docker image inspect "${src}" >/dev/null 2>&1 || die "${src} is not built; run 'make images' first"
      [ "${src}" = "${dst}" ] || docker tag "${src}" "${dst}"
      log "push ${dst}"
      docker push "${dst}"
    done
    info "point the cluster at ${registry}:"
    info "  pipeline:  RECS_IMAGE_REGISTRY=${registry} recs pipeline compile|submit ..."
    info "  manifests: cd manifests/overlays/production && kustomize edit set image \\"
    for k in trainer-gpu predictor; do
      info "    startup-recs-${k}=$(RECS_IMAGE_REGISTRY="${registry}" image_ref "$k")"
    done
    ;;
  load-kind)
    need kind
    for k in "${KINDS[@]}"; do
      ref="$(image_ref "$k")"
      log "kind load docker-image ${ref}"
      kind load docker-image "${ref}" --name "${KIND_CLUSTER_NAME}"
    done
    ;;
  load-minikube)
    need minikube
    for k in "${KINDS[@]}"; do
      ref="$(image_ref "$k")"
      log "minikube image load ${ref}"
      minikube -p "${MINIKUBE_PROFILE}" image load "${ref}"
    done
    ;;
  *) die "unknown command ${cmd}" ;;
esac

#!/usr/bin/env bash
# make manifests-check: the static checks of images, manifests and scripts, without a cluster
# (kustomize render, kubernetes-validate --strict, KServe/Training-Operator schemas, hadolint,
# checkov, shellcheck, image-tag consistency). The same tests run in `make test`.
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
need kubectl
cd "${ROOT}"
# the fresh-venv install test (slow) runs in `make test`; add -m slow here to include it
"${PY}" -m pytest -q -m "not slow" tests/integration/test_manifests.py tests/integration/test_images.py "$@"

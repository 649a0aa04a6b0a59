#!/usr/bin/env bash
# make kind-demo: on the cluster of `make kind-up`, run the product end to end:
#   1 build + load images  2 seed the demo database  3 submit the pipeline (recs pipeline submit)
#   4 wait for the run  5 apply the InferenceServices and wait until Ready  6 port-forward
#   7 curl the legacy route GET /api/recommendations/developers/for-startup/<id>?limit=10
# OVERLAY=minikube runs the same on the minikube profile (images loaded with minikube).
# shellcheck source=scripts/cluster/lib.sh
source "$(dirname "$0")/lib.sh"
OVERLAY="${OVERLAY:-kind}"
DEMO_SIZE="${DEMO_SIZE:-demo}"
RUN_TIMEOUT="${RUN_TIMEOUT:-3600}"
need docker kubectl python3
[ -x "${RECS}" ] || die "${RECS} not found: run 'make venv' first"
kubectl get namespace "${NS}" >/dev/null 2>&1 || die "namespace ${NS} missing: run 'make ${OVERLAY}-up' first"

log "1/7 build and load images ($(PYTHONPATH="${ROOT}/src" python3 -m startup_recs.core.images --format tag))"
"${ROOT}/scripts/images.sh" build-local
if [ "${OVERLAY}" = kind ]; then "${ROOT}/scripts/images.sh" load-kind; else "${ROOT}/scripts/images.sh" load-minikube; fi

log "2/7 seed the demo marketplace database (recs synth --size ${DEMO_SIZE})"
set -a
# shellcheck disable=SC1090  # the overlay's gitignored db.env (credentials.sh writes it)
source "${ROOT}/manifests/overlays/${OVERLAY}/db.env"
set +a
port_forward "${NS}" svc/marketplace-db 15432:5432
LOCAL_DB="postgresql+psycopg://${POSTGRES_USER}:${POSTGRES_PASSWORD}@127.0.0.1:15432/marketplace"
CLUSTER_DB="postgresql+psycopg://${POSTGRES_USER}:${POSTGRES_PASSWORD}@marketplace-db.${NS}.svc.cluster.local:5432/marketplace"
"${RECS}" synth --db "${LOCAL_DB}" --size "${DEMO_SIZE}" --force --oracle "${ROOT}/demo_out/kind/oracle.parquet"
STARTUP_ID="$("${PY}" - "${LOCAL_DB}" <<'PY'
import sys
import sqlalchemy as sa
eng = sa.create_engine(sys.argv[1])
with eng.connect() as c:  # the startup with the most interactions: a "hot" route
    row = c.execute(sa.text("SELECT startup_id FROM startup_interactions GROUP BY startup_id "
                            "ORDER BY count(*) DESC LIMIT 1")).first()
print(row[0])
PY
)"
info "example startup: ${STARTUP_ID}"

log "3/7 submit the pipeline to KFP (recs pipeline submit)"
port_forward "${KFP_NS}" svc/ml-pipeline-ui 18080:80
# Compile options for a laptop cluster: no GPU (gpu_count=0: the two-tower step runs on CPU in the
# trainer image, which build-local made with CPU torch) and small requests so steps fit beside KFP.
# The demo DB URL carries the demo password as a run parameter (visible in the KFP UI): fine for
# random local demo credentials, never for a production database (see docs/cluster.md).
SUBMIT_JSON="$("${RECS}" pipeline submit --host http://127.0.0.1:18080 \
  --param "db_url=${CLUSTER_DB}" --param models_uri=s3://models \
  --param 'use_cases=["startup_developer","startup_investor","developer_startup","investor_startup"]' \
  --option gpu_count=0 --option step_cpu=500m --option step_memory=1G \
  --option trainer_cpu=1 --option trainer_memory=2G \
  --run-name "kind-demo-$(date +%Y%m%d-%H%M%S)")"
RUN_ID="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["run_id"])' "${SUBMIT_JSON}")"
info "run ${RUN_ID}: http://localhost:18080/#/runs/details/${RUN_ID} (while this script runs)"

log "4/7 wait for the run (up to ${RUN_TIMEOUT}s)"
"${PY}" - "${RUN_ID}" "${RUN_TIMEOUT}" <<'PY'
import sys, time
import kfp
run_id, timeout = sys.argv[1], float(sys.argv[2])
client = kfp.Client(host="http://127.0.0.1:18080")
t0, last = time.time(), None
while True:
    state = str(client.get_run(run_id).state)
    if state != last:
        print(f"    run state: {state} ({time.time() - t0:.0f}s)", flush=True)
        last = state
    if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
        break
    if time.time() - t0 > timeout:
        sys.exit(f"error: run {run_id} not finished after {timeout:.0f}s (state {state})")
    time.sleep(15)
if state != "SUCCEEDED":
    sys.exit(f"error: run {run_id} ended {state}; see the failed step's logs in the KFP UI")
PY

log "5/7 apply the InferenceServices and wait until Ready"
kubectl apply -k "${ROOT}/manifests/overlays/${OVERLAY}"
for isvc in startup-developer startup-investor developer-startup investor-startup; do
  info "waiting up to ${WAIT_SHORT}s for inferenceservice/${isvc} Ready (bundle download + checksum verification) ..."
  kubectl -n "${NS}" wait --for=condition=Ready "inferenceservice/${isvc}" --timeout="${WAIT_SHORT}s" || {
    kubectl -n "${NS}" describe "inferenceservice/${isvc}" | tail -30 >&2
    kubectl -n "${NS}" logs -l "serving.kserve.io/inferenceservice=${isvc}" --tail=30 >&2 || true
    explain_ns "${NS}"; die "inferenceservice/${isvc} not Ready"
  }
done

log "6/7 port-forward the predictor"
port_forward "${NS}" svc/startup-developer-predictor 18081:80

log "7/7 curl the legacy route"
URL="http://127.0.0.1:18081/api/recommendations/developers/for-startup/${STARTUP_ID}?limit=10"
info "GET ${URL}"
curl -fsS "${URL}" | python3 -m json.tool
log "done: the InferenceServices keep serving; 'make kind-down' removes the cluster"

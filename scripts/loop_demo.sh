#!/usr/bin/env bash
# The closed loop, measured online (docs/online.md), on the synthetic marketplace:
#
#   1. recs synth: a planted world (its size and seed are recorded in the database);
#   2. the training pipeline (kfp.local) publishes v1;
#   3. round 1: the predictor serves v1 and logs its sessions (--log-sessions); recs simulate-traffic
#      lets the planted world answer its slates over 2 x DAYS virtual days;
#   4. the pipeline again, its test window the last DAYS days: extract appends round 1's sessions,
#      impressions and events, so v2 is trained on the predictor's own impressions (the first half of
#      round 1: the final models' fit window and the ranker's validation sessions) and tested on the rest;
#      its optional monitor step (monitor_online=true) reports round 1 online inside the pipeline;
#   5. round 2: an A/B experiment in one predictor, v1 (control) vs v2 (treatment, SHARE %),
#      sticky per startup;
#   6. the random and popularity baselines (after the training rounds: a baseline's slates in the
#      test window would make offline popularity look unbeatable and the gate refuse v2), and with
#      AA=1 an A/A experiment: the same bundle in both arms, arms by the experiment's assignment;
#   7. recs monitor per round and over all of it: online contact rate per arm, 95 % intervals, p values.
#
# Every predictor also reads, with --fresh-exclusions, the contacts made after its bundle's data (FRESH=1,
# the default; FRESH=0 serves each bundle's own exclusions only): in round 2 the older v1 no longer
# re-shows the candidates that round 1 got contacted, which the newer v2 excludes by its data.
#
# Environment: SIZE (tiny), SEED (0), SESSIONS per arm and round (1500), UC (startup_developer),
# WORKDIR (loop_out), PORT (8093), SHARE (50), AA (0), DAYS per simulated arm (7), FRESH (1), PARAMS (pipeline
# --param values, small budgets by default). `make loop-demo` runs it: tiny took 83 s and demo (AA=1) 10 min 26 s
# on an idle 2-core machine (docs/online.md, Results).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-tiny}
SEED=${SEED:-0}
SESSIONS=${SESSIONS:-1500}
UC=${UC:-startup_developer}
WORKDIR=${WORKDIR:-loop_out}
PORT=${PORT:-8093}
SHARE=${SHARE:-50}
AA=${AA:-0}
DAYS=${DAYS:-7}
FRESH=${FRESH:-1}
RECS=${RECS:-.venv/bin/recs}
PY=${PY:-.venv/bin/python}
PARAMS=${PARAMS:-tt_epochs=2 tt_batch_size=1024 embedding_dim=64 tune_als_trials=2 tune_item2item_trials=1 i2i_memory_gb=1.0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
WORK=$(cd "$WORKDIR" && pwd)
DB="sqlite:///$WORK/marketplace.db"
MODELS="$WORK/models"
MODEL_NAME=${UC//_/-}
SERVER=""
SERVES=0
T0=$(date +%s)

say() { printf '\n== %s (%ds)\n' "$*" "$(( $(date +%s) - T0 ))"; }

stop_server() {
  if [ -n "$SERVER" ]; then
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=""
  fi
}
trap stop_server EXIT

serve() {  # serve ARGS...: recs serve on loopback with session logging, until the model is ready
  SERVES=$((SERVES + 1))
  local fresh=()
  if [ "$FRESH" = 1 ]; then fresh=(--fresh-exclusions "$DB" --fresh-interval 5); fi
  "$RECS" serve "$@" --port "$PORT" --log-sessions "$DB" --reload-interval 5 "${fresh[@]}" \
    > "$WORK/serve-$SERVES.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 180); do
    if curl -sf "http://127.0.0.1:$PORT/v2/models/$MODEL_NAME/ready" > /dev/null; then return 0; fi
    if ! kill -0 "$SERVER" 2>/dev/null; then echo "recs serve exited; see $WORK/serve-*.log" >&2; exit 1; fi
    sleep 1
  done
  echo "recs serve not ready after 180 s" >&2
  exit 1
}

simulate() {  # simulate ARGS...: prints the summary, remembers the first session's time in $STARTED
  local out
  out=$("$RECS" simulate-traffic --db "$DB" --size "$SIZE" --seed "$SEED" --use-case "$UC" \
        --sessions "$SESSIONS" --days "$DAYS" "$@")
  echo "$out"
  STARTED=$(echo "$out" | tail -1 | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["calendar"][0])')
}

pipeline() {  # pipeline RUN [run-local flags]
  local run=$1 args=()
  shift
  for p in $PARAMS; do args+=(--param "$p"); done
  "$RECS" pipeline run-local --db "$DB" --use-case "$UC" --workdir "$WORK/$run" --models-uri "$MODELS" "${args[@]}" \
    "$@" > "$WORK/$run.log" 2>&1 || { tail -20 "$WORK/$run.log" >&2; exit 1; }
  grep -A9 "NDCG@10 / Recall@10" "$WORK/$run.log" || true
}

say "[1/7] synthetic marketplace: size $SIZE, seed $SEED"
"$RECS" synth --db "$DB" --size "$SIZE" --seed "$SEED" | tail -4

say "[2/7] training pipeline, round 1"
pipeline run1
test -d "$MODELS/$UC/v1" || { echo "round 1 published nothing" >&2; exit 1; }

say "[3/7] round 1: v1 served with session logging, $SESSIONS sessions over $((2 * DAYS)) virtual days"
serve --bundle "$UC=$MODELS/$UC/v1"
simulate --url "http://127.0.0.1:$PORT" --days $((2 * DAYS))
ROUND1=$STARTED
stop_server
"$RECS" monitor --db "$DB" --use-case "$UC" --since "$ROUND1" --out "$WORK/monitor/round1"

say "[4/7] training pipeline, round 2: trained on round 1's first half, tested on its second"
# test window = the last DAYS days (round 1's second half): the final models and the ranker's
# validation sessions include round 1's first half, i.e. the predictor's own impressions
pipeline run2 --test-days "$DAYS" --param monitor_online=true
# the run's monitor step (monitor_online) read round 1 online, since v1's data watermark
grep -A4 "online evaluation of" "$WORK/run2/logs/$UC/monitor.log" 2>/dev/null | grep -v "^--" || true
if [ -d "$MODELS/$UC/v2" ]; then TREATMENT=v2; else
  echo "the gate kept v1 (round 2 did not beat it offline): round 2 runs v1 against itself"; TREATMENT=v1; fi

say "[5/7] round 2: A/B experiment, v1 (control) vs $TREATMENT (treatment, $SHARE %)"
serve --bundle "$UC=$MODELS/$UC/v1" --experiment "$UC=$MODELS/$UC/$TREATMENT:$SHARE:loop-$SEED-ab"
SESSIONS=$((SESSIONS * 2)) simulate --url "http://127.0.0.1:$PORT"
ROUND2=$STARTED
stop_server
if [ "$TREATMENT" = v2 ]; then
  "$RECS" monitor --db "$DB" --use-case "$UC" --since "$ROUND2" --out "$WORK/monitor/round2"
else
  "$RECS" monitor --db "$DB" --use-case "$UC" --since "$ROUND2" --experiment "loop-$SEED-ab:$SHARE" \
    --out "$WORK/monitor/round2"
fi

say "[6/7] baselines (after the training rounds, so they do not feed the models): random, popularity"
simulate --policy random
simulate --policy popularity
if [ "$AA" = 1 ]; then
  echo "A/A experiment: $TREATMENT in both arms"
  serve --bundle "$UC=$MODELS/$UC/$TREATMENT" --experiment "$UC=$MODELS/$UC/$TREATMENT:50:loop-$SEED-aa"
  SESSIONS=$((SESSIONS * 2)) simulate --url "http://127.0.0.1:$PORT"
  AASTART=$STARTED
  stop_server
  "$RECS" monitor --db "$DB" --use-case "$UC" --since "$AASTART" --experiment "loop-$SEED-aa:50" \
    --out "$WORK/monitor/aa"
  AAUNTIL=(--until "$AASTART")
else
  AAUNTIL=()
fi
# every arm of the run: v1 (round 1 and round 2's control), v2, random, popularity
"$RECS" monitor --db "$DB" --use-case "$UC" --since "$ROUND1" "${AAUNTIL[@]}" --out "$WORK/monitor/all"

say "[7/7] online contact rate per round and arm"
"$PY" - "$WORK/monitor" <<'EOF'
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
print(f"{'round':<8}{'arm':<14}{'sessions':>9}{'impressions':>12}{'contacts':>9}{'rate':>9}  95% CI")
for rnd in ("round1", "round2", "aa", "all"):
    f = root / rnd / "metrics.json"
    if not f.is_file():
        continue
    m = json.loads(f.read_text())
    for arm, a in m["arms"].items():
        lo, hi = a["contact_rate_ci95"]
        print(f"{rnd:<8}{arm:<14}{a['sessions']:>9}{a['impressions']:>12}{a['contacts']:>9}"
              f"{a['contact_rate']:>9.4f}  [{lo:.4f}, {hi:.4f}]")
    for c in m["comparisons"]:
        print(f"{'':<8}{c['a']} vs {c['b']}: x{c['ratio']:.2f} (lift {c['lift']:+.1%}), p = {c['p_value']:.4f}")
print(f"\nreports: {root}/<round>/report.md")
EOF
say "done: $WORK"

#!/usr/bin/env bash
# The tuned sweep (configs/sweep_tuned.yaml) on one machine: SHARDS processes in parallel for the grid
# phase, then for the seeds phase (which reads the grid's choices), then the report and a small archive of
# the results (result.json, predictions.json, config.json, metrics.jsonl, selection.json; no weights,
# no TensorBoard events, no checkpoints) with the shards' logs.
#
#   SHARDS=12 bench/tuned_sweep_parallel.sh          # run (or resume) everything, then pack
#   PACK_ONLY=1 bench/tuned_sweep_parallel.sh        # only the report and the archive of what has finished
#   SKIP_PACK=1 bench/tuned_sweep_parallel.sh        # only the runs (e.g. a run folder holding result files only)
#
# Environment: SHARDS (12), CONFIG (configs/sweep_tuned.yaml), RUNS (the config's out), LOGS (runs/tuned-logs),
# REPORT (runs/tuned-results.md), TAR (runs/tuned-results.tgz), PYTHON (python3); DELTASPACE_CACHE: the assets.
# Rerunning resumes: finished runs are skipped. Under `timeout`, a killed sweep loses only unfinished runs.
# A config with combo_tuning (configs/coeff_adds.yaml) runs its combo_lr and combo_option phases between the
# grid and the seeds, each on every shard before the next.
set -uo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:-12}
CONFIG=${CONFIG:-configs/sweep_tuned.yaml}
PY=${PYTHON:-python3}
LOGS=${LOGS:-runs/tuned-logs}
REPORT=${REPORT:-runs/tuned-results.md}
TAR=${TAR:-runs/tuned-results.tgz}
OUT_ARGS=()
[ -n "${RUNS:-}" ] && OUT_ARGS=(--out "$RUNS")
RUNS=${RUNS:-$("$PY" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['out'])" "$CONFIG")}
# One thread per process (the shards share the cores); progress bars at most every 30 s in the logs.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
mkdir -p "$LOGS"
PHASES="grid seeds"
grep -q '^combo_tuning:' "$CONFIG" && PHASES="grid combo_lr combo_option seeds"
status=0
if [ -z "${PACK_ONLY:-}" ]; then
  for phase in $PHASES; do
    pids=()
    for ((i = 0; i < SHARDS; i++)); do
      "$PY" -m deltaspace.cli tune --config "$CONFIG" "${OUT_ARGS[@]}" --phase "$phase" --shard "$i/$SHARDS" \
        >"$LOGS/$phase-$i.log" 2>&1 &
      pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
    echo "$(date -u +%T) $phase phase: $SHARDS shards, $failed with failed runs (see $LOGS/$phase-*.log)"
    [ "$failed" -eq 0 ] || status=1
  done
fi
[ -n "${SKIP_PACK:-}" ] && exit $status
"$PY" -m deltaspace.cli report results --config "$CONFIG" "${OUT_ARGS[@]}" --output "$REPORT" || status=1
find "$RUNS" "$LOGS" "$REPORT" \( -name tb -o -name delta -o -name checkpoints \) -prune -o -type f \
  ! -name '*.tmp' -print 2>/dev/null | tar -czf "$TAR" -T - || status=1
echo "$(date -u +%T) wrote $REPORT and $TAR ($(du -h "$TAR" | cut -f1)): $(find "$RUNS" -name result.json | wc -l) finished runs"
exit $status

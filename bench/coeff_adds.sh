#!/usr/bin/env bash
# Issue 20 on one machine ("What Coeff adds"): both protocols in SHARDS parallel processes each, one after the
# other, then the report section and a small archive of the results (result.json, predictions.json,
# config.json, metrics.jsonl, the selections, the logs; no weights, no TensorBoard events, no checkpoints).
#
#   SHARDS=14 bench/coeff_adds.sh      # run (or resume) both protocols, then the report and the archive
#   ONLY=tuned bench/coeff_adds.sh     # item 1 only (configs/coeff_adds.yaml); ONLY=paper: item 2 only
#   PACK_ONLY=1 bench/coeff_adds.sh    # only the report and the archive of what has finished
#
# Item 1 (configs/coeff_adds.yaml) goes through bench/tuned_sweep_parallel.sh (grid, combo_lr, combo_option,
# seeds: each phase on every shard before the next); item 2 (configs/coeff_paper_regime.yaml) is a plain
# sweep, `deltaspace sweep --shard i/n`. Run counts and time per run: the configs' headers (H200, 12-16
# shards: ~10-17 min for item 1, ~15-30 min for item 2). Rerunning resumes: finished runs are skipped.
# Environment: SHARDS (12), PYTHON (python3), TUNED / PAPER (the two configs), LOGS (runs/coeff-adds-logs), REPORT (runs/coeff-adds-results.md:
# a copy of docs/results.md with the section written in; `deltaspace report coeff-adds` writes docs/results.md
# itself), TAR (runs/coeff-adds-results.tgz); DELTASPACE_CACHE: the assets.
set -uo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:-12}
PY=${PYTHON:-python3}
TUNED=${TUNED:-configs/coeff_adds.yaml}
PAPER=${PAPER:-configs/coeff_paper_regime.yaml}
LOGS=${LOGS:-runs/coeff-adds-logs}
REPORT=${REPORT:-runs/coeff-adds-results.md}
TAR=${TAR:-runs/coeff-adds-results.tgz}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
mkdir -p "$LOGS"
status=0
if [ -z "${PACK_ONLY:-}" ]; then
  if [ "${ONLY:-tuned}" = tuned ]; then
    CONFIG=$TUNED LOGS=$LOGS/tuned SKIP_PACK=1 SHARDS=$SHARDS PYTHON=$PY bench/tuned_sweep_parallel.sh || status=1
  fi
  if [ "${ONLY:-paper}" = paper ]; then
    pids=()
    for ((i = 0; i < SHARDS; i++)); do
      "$PY" -m deltaspace.cli sweep --config "$PAPER" --shard "$i/$SHARDS" >"$LOGS/paper-$i.log" 2>&1 &
      pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
    echo "$(date -u +%T) paper regime: $SHARDS shards, $failed with failed runs (see $LOGS/paper-*.log)"
    [ "$failed" -eq 0 ] || status=1
  fi
fi
[ -f "$REPORT" ] || cp docs/results.md "$REPORT"
"$PY" -m deltaspace.cli report coeff-adds --tuned "$TUNED" --paper "$PAPER" --output "$REPORT" || status=1
read -r -a OUTS <<<"$("$PY" -c "import sys, yaml; print(' '.join(yaml.safe_load(open(f))['out'] for f in sys.argv[1:]))" "$TUNED" "$PAPER")"
find "${OUTS[@]}" "$LOGS" "$REPORT" \( -name tb -o -name delta -o -name checkpoints \) -prune -o -type f \
  ! -name '*.tmp' -print 2>/dev/null | tar -czf "$TAR" -T - || status=1
echo "$(date -u +%T) wrote $REPORT and $TAR ($(du -h "$TAR" | cut -f1))"
exit $status

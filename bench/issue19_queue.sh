#!/usr/bin/env bash
# Issue 19's multi-task experiments on suite v2, one after the other, each resumable: rerun the script and
# every study picks up where it stopped (finished runs, fits, stage-2 parts and records are kept).
#
#   1. deltaspace study full_suite      originals at the tuned comparison's budget (100 runs), stages 1-4
#   2. deltaspace study full_suite_fit  the same with the paper's stage 1 trained (reuses 1's runs)
#   3. deltaspace study full_suite_fit_random  2 without the descent directions (random extra directions)
#   4. deltaspace study full_suite_fit_hull  2's stage 2 kept inside the fitted region (continues 2's fit)
#   5. deltaspace study source_curve_hull    k in {4, 8, 15} source tasks, stage 2 inside the fitted region
#   6. deltaspace study full_suite_fit_agree  2 with the agreement term in stage 1 (not in the paper)
#   7. deltaspace study source_curve    k in {4, 8, 15} source tasks x d in {16, 64} (reuses 60 of 1's runs)
#
#   bench/issue19_queue.sh                       # in the background: nohup bench/issue19_queue.sh &
#   PRECISION=no bench/issue19_queue.sh          # float32 (a CPU without bf16 instructions, or to compare)
#   ONLY="source_curve" bench/issue19_queue.sh   # a subset, in the order given
#
# Cost on the 2-core CPU machine under bf16 autocast (bench/results/cpu_bf16_step.md: 1.4-1.6x a float32
# step on this CPU): full_suite ~4 h (the 100 originals ~2.5 h of it), full_suite_fit and full_suite_fit_random
# ~2 h each (joint fit 0.85 s a step x 4,000 + 10 validations ~70 min; stage 2 25 runs ~30 min; measured on the
# faster machine: full_suite_fit_random 110 min with its 40 Coeff / full originals 20 min, fit 0.65 s a step 44 min),
# full_suite_fit_hull ~40 min, source_curve_hull ~30 min (75 stage-2 runs), full_suite_fit_agree ~3 h,
# source_curve ~2.7 h (measured: its 60 originals 25.5 min, each point 12-16.5 min; on a faster machine than the
# other estimates, which may be ~2x high there); on a GPU, minutes each (--workers > 1 shares one GPU).
# The studies share original-space runs only at one precision; the reports say which. Logs: studies/logs/.
set -uo pipefail
cd "$(dirname "$0")/.."
PRECISION=${PRECISION:-bf16}
ONLY=${ONLY:-full_suite full_suite_fit full_suite_fit_random full_suite_fit_hull source_curve_hull full_suite_fit_agree source_curve}
mkdir -p studies/logs
status=0
for study in $ONLY; do
  echo "$(date -u +%FT%TZ) start $study (mixed precision: $PRECISION)"
  if deltaspace study "$study" --mixed-precision "$PRECISION" --no-fetch ${WORKERS:+--workers "$WORKERS"} \
      >"studies/logs/$study.log" 2>&1; then
    echo "$(date -u +%FT%TZ) done $study: studies/$study/report.md"
  else
    echo "$(date -u +%FT%TZ) $study failed: see studies/logs/$study.log (rerun to resume)"
    status=1
    break
  fi
done
exit $status

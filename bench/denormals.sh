#!/usr/bin/env bash
# Does flushing subnormal floats make `medseg train` faster? (docs/bench/speed.md)
#   bash bench/denormals.sh CONFIG DATA INIT OUT [PAIRS] [THREADS]
# Fine-tunes INIT (a trained checkpoint, whose confident outputs are where subnormal values appear)
# for one epoch of CONFIG on DATA, alternately with medseg's default (subnormals flushed) and with
# MEDSEG_KEEP_DENORMALS=1, PAIRS times (default 3), THREADS intra-op threads (default 2), one run
# at a time. Prints each run's epoch seconds and final training loss from its log.csv; run it on a
# quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=$1 DATA=$2 INIT=$3 OUT=$4 PAIRS=${5:-3} THREADS=${6:-2}
MEDSEG=${MEDSEG:-.venv/bin/medseg}
mkdir -p "$OUT"
echo "run,mode,epoch_seconds,train_loss"
for pair in $(seq 1 "$PAIRS"); do
  # alternate which mode goes first, so that a drift of the machine hits both
  modes=(keep flush)
  (( pair % 2 == 0 )) && modes=(flush keep)
  for mode in "${modes[@]}"; do
    run="$OUT/$mode$pair"
    keep=""
    [ "$mode" = keep ] && keep=1
    MEDSEG_KEEP_DENORMALS=$keep OMP_NUM_THREADS=$THREADS "$MEDSEG" train -c "$CONFIG" --data "$DATA" \
      --init "$INIT" --epochs 1 --set data.train_repeats=1 --set train.budget_minutes=null \
      --no-postprocess --out "$run" --overwrite >"$run.log" 2>&1
    python3 - "$run/log.csv" "$pair" "$mode" <<'EOF'
import csv, sys
row = list(csv.DictReader(open(sys.argv[1])))[-1]
print(f"{sys.argv[2]},{sys.argv[3]},{row['epoch_seconds']},{row['train_loss']}")
EOF
  done
done

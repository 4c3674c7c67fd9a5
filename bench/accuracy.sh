#!/usr/bin/env bash
# Accuracy tables of docs/benchmarks.md: `medseg benchmark` on the shared datasets.
#   bash bench/accuracy.sh [OUT_ROOT] [EPOCH_SCALE]
# Every cell of one benchmark gets the same epochs, seed and split; the models are the
# CPU-sized settings below (the same on every dataset). EPOCH_SCALE (default 1) multiplies
# the epochs, e.g. 0.05 for a quick check of the pipeline. Cells run two at a time, one
# thread each. Speed columns are measured afterwards on an idle machine with
# `python bench/accuracy_report.py costs OUT_ROOT` (profiling is skipped here). Finished cells
# are skipped when the script runs again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/accuracy}
SCALE=${2:-1}
DATA=${MEDSEG_DATA:-../shared/data}
MEDSEG=${MEDSEG:-.venv/bin/medseg}
S=128   # training input (crop or resize), pixels
BEF="befunet_small:img_size=$S:window_size=4:lcaf_window=4"
MODELS="unet:base_width=16,deeplabv3plus:backbone=resnet18:width_mult=0.5,$BEF"
ep() { python3 -c "import sys; print(max(1, round($1 * $SCALE)))"; }
common=(--seed 0 --workers 2 --no-profile --set "data.size=[$S,$S]" --set train.early_stopping=null
        --set eval.overlays=4)

run() {  # out_name dataset config epochs models losses [extra args]
  local name=$1 data=$2 cfg=$3 epochs=$4 models=$5 losses=$6; shift 6
  echo "=== $name: $(date -u +%H:%M:%S) epochs=$epochs losses=$losses"
  "$MEDSEG" benchmark -c "configs/$cfg" --data "$DATA/$data" --models "$models" --losses "$losses" \
    --epochs "$(ep "$epochs")" "${common[@]}" "$@" --out "$OUT/$name"
}

run ph2 ph2 unet_ph2.yaml 30 "$MODELS" dice_ce,focal_tversky,lovasz_hinge --set loss.mode=binary
run acdc acdc unet_acdc.yaml 20 "$MODELS" dice_ce
run drive drive unet_drive.yaml 20 "$MODELS" dice_ce --set loss.mode=binary
run busi busi unet_busi.yaml 30 "$MODELS" dice_ce --set loss.mode=binary
run isbi2012-em isbi2012-em unet_isbi2012.yaml 30 "$MODELS" dice_ce --set loss.mode=binary
# BEFUnet with the paper's loss (body CE + Dice, plus edge supervision on the 4 stage edge maps)
run ph2-befunet-loss ph2 unet_ph2.yaml 30 "$BEF" befunet --set loss.mode=binary
run acdc-befunet-loss acdc unet_acdc.yaml 20 "$BEF" befunet
# BUSI again with a longer schedule (30 epochs leave the training loss near its start)
run busi-100ep busi unet_busi.yaml 100 "$MODELS" dice_ce --set loss.mode=binary
# ACDC again with twice the epochs (BEFUnet first: the slowest cell starts at once)
run acdc-40ep acdc unet_acdc.yaml 40 "$BEF,unet:base_width=16,deeplabv3plus:backbone=resnet18:width_mult=0.5" dice_ce
echo "=== done: $(date -u +%H:%M:%S)"

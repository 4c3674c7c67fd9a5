#!/usr/bin/env bash
# The three models of the accuracy tables under the plan's recipe (docs/bench/accuracy.md):
#   bash bench/accuracy_plan.sh [OUT_ROOT] [BUDGET_SCALE] [DATASETS...]
# For each dataset, `medseg plan` at that dataset's budget writes the base config; every cell
# then trains the plan's recipe (patch, batch, z-score, light augmentation, AdamW + poly, Dice + CE)
# for the same wall-clock budget, and only the network changes. The U-Net is the plan's network
# with deep supervision; DeepLab v3+ and BEFUnet-small have no decoder scales, so the
# deep-supervision loss supervises their full-resolution output only (Dice + CE, as the U-Net's
# top level). Cells run one at a time with every core (WORKERS=2: two at a time, one thread each,
# which halves the wall time but gives each cell about a third of the steps). BUDGET_SCALE (default 1) multiplies the
# budgets, e.g. 0.02 for a quick check of the pipeline. ONLY (default: empty, all three) names the
# networks to run, e.g. ONLY=unet,deeplabv3plus. Finished cells are skipped when the script runs
# again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/acc_plan}
SCALE=${2:-1}
shift $(( $# >= 2 ? 2 : $# ))
DATASETS=("$@")
[ ${#DATASETS[@]} -gt 0 ] || DATASETS=(ph2 acdc drive isbi2012-em busi)
DATA=${MEDSEG_DATA:-../shared/data}
MEDSEG=${MEDSEG:-.venv/bin/medseg}
WORKERS=${WORKERS:-1}
ONLY=${ONLY:-}
mkdir -p "$OUT"

# the entries of a comma-separated --models list whose network is named in ONLY (all when unset)
only() {
  [ -n "$ONLY" ] || { echo "$1"; return; }
  local kept=() entry
  IFS=, read -ra entries <<<"$1"
  for entry in "${entries[@]}"; do
    [[ ",$ONLY," == *",${entry%%:*},"* ]] && kept+=("$entry")
  done
  [ ${#kept[@]} -gt 0 ] || { echo "ONLY=$ONLY names none of: $1" >&2; exit 2; }
  (IFS=,; echo "${kept[*]}")
}

minutes() { python3 -c "print(f'{$1 * $SCALE:.4g}m')"; }

# the plan's network as a --models entry: "unet:key=value:..." from the plan's model section
unet_of_plan() {
  "${MEDSEG%/medseg}/python" -c 'import sys, yaml
m = yaml.safe_load(open(sys.argv[1]))["model"]
print(":".join([m["name"]] + [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in m["options"].items()]))' "$1"
}

run() {  # dataset budget_minutes befunet_img_size [extra --set args]
  local name=$1 budget size=$3
  budget=$(minutes "$2"); shift 3
  echo "=== $name: $(date -u +%H:%M:%S) budget=$budget"
  "$MEDSEG" plan "$DATA/$name" --out "$OUT/plan_$name.yaml" --budget "$budget" >/dev/null
  local models
  models="$(unet_of_plan "$OUT/plan_$name.yaml"),deeplabv3plus:backbone=resnet18:width_mult=0.5"
  models+=",befunet_small:img_size=$size:window_size=4:lcaf_window=4"
  models=$(only "$models")
  "$MEDSEG" benchmark -c "$OUT/plan_$name.yaml" --data "$DATA/$name" --models "$models" \
    --losses deep_supervision --budget "$budget" --seed 0 --workers "$WORKERS" --no-profile "$@" --out "$OUT/$name"
}

for d in "${DATASETS[@]}"; do
  case $d in
    ph2) run ph2 10 128 ;;
    acdc) run acdc 15 224 ;;
    drive) run drive 8 128 ;;
    # the plan maps the white cells to class 1; score the membrane, as the preset table does
    isbi2012-em) run isbi2012-em 4 128 --set 'data.mask_values={255: 0, 0: 1}' \
                   --set 'data.class_names=[cell, membrane]' ;;
    busi) run busi 7 128 ;;
    *) echo "unknown dataset $d" >&2; exit 2 ;;
  esac
done
echo "=== done: $(date -u +%H:%M:%S)"

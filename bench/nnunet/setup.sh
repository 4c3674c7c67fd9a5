#!/usr/bin/env bash
# Create (or complete) the nnU-Net v2 virtual environment .venv-nnunet at the repository root.
#
# nnU-Net is a comparison peer only: it never enters medseg's dependencies or its venv.
# Workarounds needed on these CPU machines (found by a peer and re-checked here):
#   1. torch stays the CPU build 2.13.0: it is installed first and held by a constraint, so that
#      nnunetv2 -> timm -> torchvision cannot swap in a CUDA torch.
#   2. torchvision is removed afterwards: the PyPI wheel matching torch 2.13.0 is a CUDA build whose
#      import fails with the CPU torch. Without it timm cannot be imported, which only matters for
#      nnU-Net's primus/ trainers.
#   3. nnUNetv2_train -tr NAME searches trainers by importing the modules of
#      nnunetv2/training/nnUNetTrainer/ (top level first); a trainer in a subpackage would make the
#      search reach primus/ (timm) and fail. So the budget trainer is copied to the top level.
#
# Usage (from the repository root): bash bench/nnunet/setup.sh      (re-running is safe)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${NNUNET_VENV:-$REPO/.venv-nnunet}"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
TORCH_VERSION=2.13.0
NNUNET_VERSION=2.8.1

if [[ ! -x "$PY" ]]; then
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi

CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" >"$CONSTRAINTS"

torch_ok() { "$PY" -c "import torch, sys; sys.exit(not torch.__version__.startswith('$TORCH_VERSION'))" 2>/dev/null; }
if ! torch_ok; then
    # PEP 440 ranks the local CPU wheel 2.13.0+cpu (when a wheel folder offers it) above the plain one.
    "${PIP[@]}" install "torch==$TORCH_VERSION"
fi
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('nnunetv2') != '$NNUNET_VERSION')" 2>/dev/null; then
    "${PIP[@]}" install -c "$CONSTRAINTS" "nnunetv2==$NNUNET_VERSION"
fi
torch_ok || "${PIP[@]}" install --force-reinstall --no-deps "torch==$TORCH_VERSION"
"$PY" -m pip --disable-pip-version-check uninstall -y -q torchvision 2>/dev/null || true

TRAINER_DIR="$("$PY" -c 'import nnunetv2, os; print(os.path.join(os.path.dirname(nnunetv2.__file__), "training", "nnUNetTrainer"))')"
cp "$REPO/bench/nnunet/nnUNetTrainerBudget.py" "$TRAINER_DIR/"

"$PY" - <<'PY'
import torch
import nnunetv2
from nnunetv2.training.nnUNetTrainer.nnUNetTrainerBudget import nnUNetTrainerBudget  # noqa: F401

print(f"nnU-Net env ready: torch {torch.__version__}, nnunetv2 at {nnunetv2.__file__}")
PY

#!/usr/bin/env bash
# Create or update the benchmark-only virtual environment .venv-bench in the checkout (idempotent).
#
# Peers (MONAI, MedPy, segmentation_models_pytorch, timm, torchvision) live ONLY here; the medseg
# package never needs or imports them.  torch stays pinned at 2.13.0 (CPU build): every peer whose
# declared requirements would pull another torch (torchvision, timm, smp) is installed --no-deps.
#
# torchvision: the only PyPI wheel matching torch 2.13.0 is torchvision 0.28.0 (requires
# torch==2.13.0), a CUDA build.  Its compiled ops (_C.so) link libtorch_cuda.so and do not load with
# the CPU torch; torchvision then imports fine EXCEPT for two unguarded fake-kernel registrations
# (torchvision::nms / qnms) that raise "operator torchvision::nms does not exist".  A 40-line import
# hook (_medseg_bench_tv_shim, written below into the venv's site-packages and activated by a .pth
# file) declares those two schemas just before torchvision is first imported.  Result: models,
# transforms, timm and smp work on CPU; torchvision.ops.nms/roi_align/deform_conv2d raise
# torchvision's own "Couldn't load custom C++ ops" error (not used by segmentation models).
#
# Usage: bash bench/setup_env.sh            (re-running only fills in what is missing)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MEDSEG_BENCH_VENV:-$REPO/.venv-bench}"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

TORCH_VERSION=2.13.0
TORCHVISION_VERSION=0.28.0   # the release built against torch 2.13.0

if [[ ! -x "$PY" ]]; then
    python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi

have() { "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

# 1. torch (CPU build) first, so that nothing below can choose a different one.
if ! "$PY" -c "import torch, sys; sys.exit(not torch.__version__.startswith('$TORCH_VERSION'))" 2>/dev/null; then
    # The CPU wheel (torch-2.13.0+cpu) comes from the local wheel folder (a local wheel folder named by PIP_FIND_LINKS);
    # PEP 440 ranks 2.13.0+cpu above the plain (CUDA) 2.13.0, so pip picks it.
    "${PIP[@]}" install "torch==$TORCH_VERSION"
fi

# 2. Peers whose dependencies do not include torch (or accept the installed one): normal install,
#    constrained so that pip may not touch torch.
CONSTRAINTS="$(mktemp)"; trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
"${PIP[@]}" install -c "$CONSTRAINTS" -r "$REPO/bench/requirements.txt"

# 3. Peers that declare torchvision/torch requirements: --no-deps, exact versions.
have torchvision "$TORCHVISION_VERSION" || "${PIP[@]}" install --no-deps "torchvision==$TORCHVISION_VERSION"
have timm 1.0.31 || "${PIP[@]}" install --no-deps "timm==1.0.31"
have segmentation_models_pytorch 0.6.0 || "${PIP[@]}" install --no-deps "segmentation-models-pytorch==0.6.0"

# 4. The torchvision import shim (see header) and a .pth that puts the repo on sys.path, so that
#    `import medseg` works in this venv without an editable install.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$SITE/_medseg_bench_tv_shim.py" <<'EOF'
"""Bench-venv-only shim: lets the PyPI (CUDA) torchvision wheel import on a CPU-only torch.

The torchvision 0.28.0 PyPI wheel's compiled ops (_C.so) link against libtorch_cuda.so and fail to
load with torch 2.13.0+cpu.  torchvision then treats its ops as absent (extension._has_ops() is
False) and skips every registration except two unguarded `register_fake("torchvision::nms"/"qnms")`
calls, which crash with "operator torchvision::nms does not exist".  This hook declares those two
operator schemas (no kernels) just before torchvision is first imported, so the import succeeds.
The compiled ops stay unavailable: torchvision.ops.nms/roi_align/deform_conv2d raise torchvision's
own "Couldn't load custom C++ ops" error; models, transforms and pure-Python code work.
Written by bench/setup_env.sh into .venv-bench only; medseg never imports torchvision.
"""

import sys
from importlib.abc import MetaPathFinder

_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIB = []


def _real_ops_load(torch) -> bool:
    """True when torchvision's own _C.so loads (a matching CPU build): then the shim does nothing."""
    import os

    for entry in sys.path:
        so = os.path.join(entry or ".", "torchvision", "_C.so")
        if os.path.exists(so):
            try:
                torch.ops.load_library(so)
                return True
            except (ImportError, OSError):
                return False
    return False


class _TorchvisionOpsShim(MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)  # run once
        import torch

        if not _LIB and not _real_ops_load(torch):
            lib = torch.library.Library("torchvision", "FRAGMENT")
            for name, schema in _SCHEMAS.items():
                lib.define(name + schema)
            _LIB.append(lib)
        return None  # let the normal finders import torchvision


sys.meta_path.insert(0, _TorchvisionOpsShim())
EOF
echo "import _medseg_bench_tv_shim" > "$SITE/_medseg_bench_tv_shim.pth"
echo "$REPO" > "$SITE/_medseg_repo.pth"

# 5. Check: torch unchanged, peers import, smp builds and runs on CPU.
"$PY" - <<'EOF'
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
import monai, medpy, onnxruntime, timm, torchvision, segmentation_models_pytorch as smp  # noqa: F401
import medseg  # noqa: F401  (from the repo, via _medseg_repo.pth)
with torch.no_grad():
    y = smp.Unet("resnet34", encoder_weights=None, classes=1).eval()(torch.zeros(1, 3, 64, 64))
assert y.shape == (1, 1, 64, 64)
print(f"bench venv ok: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"timm {timm.__version__}, smp {smp.__version__}, monai {monai.__version__}")
EOF

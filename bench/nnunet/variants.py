"""medseg prediction variants from one trained run, for ``score.py --variant``: flip TTA, and
post-processing decided on the validation cases only (never on the test cases).

    PY bench/nnunet/variants.py WORK            # after run.py --tool medseg (PH2 only)

Writes, next to ``WORK/predictions/medseg``:

- ``predictions/medseg_tta/masks``: ``medseg predict --tta`` (flips) with the same checkpoint;
- ``predictions/medseg_val/masks``: the validation cases, predicted without TTA, and the
  decision ``predictions/postprocessing.json``: ``medseg.postprocess.decide_postprocessing`` on
  (validation prediction, validation reference) pairs, nnU-Net's rule (keep the largest
  component only when mean Dice rises and no class falls; then small components);
- ``predictions/medseg_pp/masks`` and ``predictions/medseg_tta_pp/masks``: that decision applied to
  the test predictions without and with TTA.

Then: ``PY bench/nnunet/score.py WORK --variant medseg+tta=predictions/medseg_tta/masks
--variant medseg+pp=predictions/medseg_pp/masks --variant medseg+tta+pp=predictions/medseg_tta_pp/masks``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.postprocess import decide_postprocessing

REPO = Path(__file__).resolve().parents[2]


def predict(ckpt: Path, inputs: Path, out: Path, tta: bool) -> None:
    cmd = [sys.executable, "-m", "medseg.cli", "predict", str(ckpt), str(inputs), "--out", str(out)]
    cmd += ["--no-overlays", "--device", "cpu", "--overwrite"] + (["--tta"] if tta else [])
    print("[variants]", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def read_mask(path: Path) -> np.ndarray:
    return (np.asarray(Image.open(path)) > 127).astype(np.uint8)


def apply_plan(plan, src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.png")):
        Image.fromarray((plan.apply(read_mask(f)) * 255).astype(np.uint8)).save(dst / f.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path)
    args = ap.parse_args(argv)
    work = args.work.resolve()
    run = work / "medseg_run" / "checkpoints"
    ckpt = next((run / n for n in ("best.safetensors", "last.safetensors") if (run / n).is_file()), None)
    if ckpt is None:
        raise SystemExit(f"variants.py: {run}: no best/last checkpoint (run run.py --tool medseg first)")
    preds = work / "predictions"
    predict(ckpt, work / "test_input" / "images", preds / "medseg_tta", tta=True)
    val_ids = (work / "medseg_data" / "val.txt").read_text().split()
    with tempfile.TemporaryDirectory() as tmp:
        val_in = Path(tmp) / "images"
        val_in.mkdir()
        for case in val_ids:
            (val_in / f"{case}.png").symlink_to(work / "medseg_data" / "images" / f"{case}.png")
        predict(ckpt, val_in, preds / "medseg_val", tta=False)
    pairs = [
        (
            read_mask(preds / "medseg_val" / "masks" / f"{c}.png"),
            read_mask(work / "medseg_data" / "masks" / f"{c}.png"),
        )
        for c in val_ids
    ]
    plan = decide_postprocessing(pairs, 2)
    (preds / "postprocessing.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    print(f"[variants] post-processing decided on {len(pairs)} validation cases: {plan.describe()}")
    apply_plan(plan, preds / "medseg" / "masks", preds / "medseg_pp" / "masks")
    apply_plan(plan, preds / "medseg_tta" / "masks", preds / "medseg_tta_pp" / "masks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

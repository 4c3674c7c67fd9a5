"""3-D patch augmentation per sample: medseg's torch/numpy pipeline (``medseg.data.transforms3d``)
against nnU-Net's own batchgeneratorsv2 training transforms (``nnUNetTrainer.get_training_transforms``)
on the same ACDC volume, patch and anisotropy (dummy 2-D rotation, mirroring on all axes).

Run it in a venv that has nnunetv2 + batchgeneratorsv2 and torch 2.13.0+cpu next to medseg's
dependencies (the project's nnU-Net venv), with medseg on PYTHONPATH:

    BENCH_EXTRA_SITE=.venv/lib/python3.11/site-packages PYTHONPATH=. MEDSEG_DATA=../shared/data \
        .venv-nnunet/bin/python bench/augment_3d_peers.py

Each repeat times ``--samples`` samples of each pipeline, the order alternating by repeat, one
torch thread (a data-loader worker's setting). Both include cutting the patch from the volume:
medseg cuts exactly the region the rotated/scaled patch reads; nnU-Net's loader cuts its larger
"initial patch" (``get_patch_size``), then its SpatialTransform resamples the centre. The two are
not feature-identical: nnU-Net also blurs (p 0.2) and simulates low resolution (p 0.25).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

# medseg's own dependencies missing from the nnU-Net venv (OpenCV, h5py) are taken from the
# venv named here, searched last, so the nnU-Net venv's torch/numpy stay the ones imported
if os.environ.get("BENCH_EXTRA_SITE"):
    sys.path.append(os.environ["BENCH_EXTRA_SITE"])

from medseg.data.patches import PatchSampler, crop_padded  # noqa: E402
from medseg.data.transforms3d import Augment3D, intensity, mirror_and_rot90, spatial_patch  # noqa: E402

PATCH = (16, 160, 160)


def load_volume() -> tuple[np.ndarray, np.ndarray]:
    """An ACDC cine-MRI volume [1, Z, Y, X] in [0, 1] and its labels (nibabel; NIfTI copy of ACDC)."""
    import nibabel as nib

    root = Path(os.environ.get("MEDSEG_DATA", "../shared/data")) / "acdc-nifti" / "testing" / "patient101"
    img = np.asarray(nib.load(str(root / "patient101_frame01.nii.gz")).dataobj, np.float32).T
    lab = np.asarray(nib.load(str(root / "patient101_frame01_gt.nii.gz")).dataobj, np.uint8).T
    img = (img - img.min()) / (img.max() - img.min())
    return img[None], lab


def medseg_sample(image, mask, roi, aug, sampler, rng):
    corner, _ = sampler.corner(image.shape[1:], rng, None)
    img, lab, inside = spatial_patch(image, mask, roi, corner, PATCH, aug.draw_matrix(rng), 0.0)
    img, lab, inside = mirror_and_rot90([img, lab, inside], aug, rng)
    return intensity(img, aug, rng), lab


def nnunet_pipeline():
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    rot = (-np.pi, np.pi)  # nnU-Net's dummy-2-D rotation range for anisotropic patches
    transforms = nnUNetTrainer.get_training_transforms(PATCH, rot, None, (0, 1, 2), True)
    initial = get_patch_size(PATCH[1:], rot, (0, 0), (0, 0), (0.85, 1.25))
    return transforms, (PATCH[0], *(int(v) for v in initial))


def nnunet_sample(image, mask, transforms, initial, rng):
    lo = [int(rng.integers(-(s // 2), max(n - s // 2, 1))) for n, s in zip(image.shape[1:], initial)]
    img = torch.from_numpy(crop_padded(image, lo, initial, 0.0))
    seg = torch.from_numpy(crop_padded(mask[None].astype(np.int16), lo, initial, -1))
    out = transforms(image=img, segmentation=seg)
    return out["image"], out["segmentation"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    image, mask = load_volume()
    roi = np.ones(mask.shape, bool)
    aug = Augment3D(inplane_only=True)  # the nnunet preset for this anisotropic patch
    sampler = PatchSampler(PATCH, 2)
    transforms, initial = nnunet_pipeline()
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"medseg transforms3d": [], "nnU-Net batchgeneratorsv2": []}
    for r in range(args.repeats):
        for name in list(times)[:: 1 if r % 2 == 0 else -1]:
            t = time.perf_counter()
            for _ in range(args.samples):
                if name.startswith("medseg"):
                    medseg_sample(image, mask, roi, aug, sampler, rng)
                else:
                    nnunet_sample(image, mask, transforms, initial, rng)
            times[name].append((time.perf_counter() - t) / args.samples * 1000)
    print(f"volume {image.shape[1:]}, patch {PATCH}, nnU-Net initial crop {initial}, 1 torch thread")
    print("| pipeline | ms per sample (median [min-max]) | samples/s |\n|---|---|---|")
    for name, xs in times.items():
        med = statistics.median(xs)
        print(f"| {name} | {med:.1f} [{min(xs):.1f}-{max(xs):.1f}] | {1000 / med:.1f} |")


if __name__ == "__main__":
    main()

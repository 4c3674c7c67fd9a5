"""One split, written once, read by both nnU-Net v2 and medseg.

usage (from the repository root, with medseg's venv):
    python bench/nnunet/prepare.py ph2  WORK [--data ../shared/data] [--seed 0] [--factor 3]
    python bench/nnunet/prepare.py acdc WORK [--data ../shared/data]

WORK receives:
  split.json                   dataset, classes, the train / val / test ids, how they were chosen
  medseg_data/                 medseg "folder" (PH2: images/ + masks/ 0/255) or "h5" (ACDC: volumes/)
                               dataset of every case, with train.txt / val.txt / test.txt (honoured
                               by medseg.data.datasets.read_split_files, so no random split is drawn)
  test_input/                  the test cases alone (links into medseg_data/), for `medseg predict`
  reference/<id>.npy           uint8 label map of each test case (PH2: 2D 0/1; ACDC: 3D volume 0..3)
  nnunet_raw/DatasetNNN_X/     nnU-Net v2 raw dataset: dataset.json, imagesTr/ (train + val),
                               labelsTr/, imagesTs/ (test)
  splits_final.json            one fold, {"train": [...], "val": [...]}: nnU-Net's fold 0 is our split

PH2 (64 images, no official split): images are area-downsampled and masks nearest-downsampled by
``--factor`` (3: about 255x192); ``round(0.25 * 64) = 16`` test images are drawn by shuffling the
sorted ids with ``random.Random(seed)`` (the split of the peer's prep_ph2.py at seed 0), and
``--n-val`` (8) of the other 48 are held out for validation with a second seeded shuffle.
ACDC (SSL4MIS HDF5, Bernard et al. 2018): the split is the source's: volumes_train/ (80 volumes of
40 patients) train, volumes_val/ (20) validate, volumes/ (20 volumes of 10 test patients) test.
Both tools train on 2-D slices of these volumes and are scored per 3-D volume.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DATASETS = {"ph2": (501, "Dataset501_PH2"), "acdc": (502, "Dataset502_ACDC")}
ACDC_CLASSES = ["background", "RV", "MYO", "LV"]


def fail(message: str) -> None:
    print(f"prepare.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def write_list(path: Path, ids: list[str]) -> None:
    path.write_text("".join(f"{i}\n" for i in ids))


def link(target: Path, link_path: Path) -> None:
    """A relative symlink, so that WORK can be moved as a whole."""
    link_path.parent.mkdir(parents=True, exist_ok=True)
    link_path.symlink_to(os.path.relpath(target, link_path.parent))


# ----------------------------------------------------------------------------- PH2


def ph2_split(
    ids: list[str], seed: int, test_fraction: float, n_val: int, test_block: int = 0
) -> dict[str, list[str]]:
    """Test = block ``test_block`` of the seeded shuffle (blocks of round(test_fraction * n) ids:
    the blocks of one seed have disjoint test sets); val = ``n_val`` of the rest."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_fraction)
    if not 0 <= test_block < len(order) // max(n_test, 1):
        fail(f"--test-block {test_block}: must be between 0 and {len(order) // max(n_test, 1) - 1}")
    chosen = order[test_block * n_test : (test_block + 1) * n_test]
    test, rest = sorted(chosen), sorted(set(order) - set(chosen))
    random.Random(seed + 1).shuffle(rest)
    if not 0 < n_val < len(rest):
        fail(f"--n-val {n_val}: must be between 1 and {len(rest) - 1}")
    return {"train": sorted(rest[n_val:]), "val": sorted(rest[:n_val]), "test": test}


def ph2_case(src: Path, case: str, factor: int) -> tuple[Image.Image, np.ndarray]:
    image_path, mask_path = src / "images" / f"{case}.png", src / "masks" / f"{case}.png"
    if not mask_path.is_file():
        fail(f"{image_path}: no mask {mask_path}")
    image = Image.open(image_path).convert("RGB")
    mask = Image.open(mask_path).convert("L")
    if image.size != mask.size:
        fail(f"{mask_path}: size {mask.size} differs from its image {image.size}")
    size = (image.width // factor, image.height // factor)
    image = image.resize(size, Image.BOX)
    labels = (np.asarray(mask.resize(size, Image.NEAREST)) > 127).astype(np.uint8)
    return image, labels


def prepare_ph2(src: Path, work: Path, args: argparse.Namespace) -> dict:
    ids = sorted(p.stem for p in (src / "images").glob("*.png"))
    if not ids:
        fail(f"{src / 'images'}: no PNG images")
    split = ph2_split(ids, args.seed, args.test_fraction, args.n_val, args.test_block)
    raw = work / "nnunet_raw" / DATASETS["ph2"][1]
    for case in ids:
        image, labels = ph2_case(src, case, args.factor)
        image.save(work / "medseg_data" / "images" / f"{case}.png")
        Image.fromarray(labels * 255).save(work / "medseg_data" / "masks" / f"{case}.png")
        in_test = case in split["test"]
        image.save(raw / ("imagesTs" if in_test else "imagesTr") / f"{case}_0000.png")
        if in_test:
            np.save(work / "reference" / f"{case}.npy", labels)
            link(
                work / "medseg_data" / "images" / f"{case}.png",
                work / "test_input" / "images" / f"{case}.png",
            )
        else:
            Image.fromarray(labels).save(raw / "labelsTr" / f"{case}.png")
    dataset_json = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(split["train"]) + len(split["val"]),
        "file_ending": ".png",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
    }
    write_json(raw / "dataset.json", dataset_json)
    how = (
        f"PH2 {len(ids)} images downsampled x{args.factor} (image: box filter, mask: nearest); "
        f"test = block {args.test_block} of round({args.test_fraction} * n) ids of the sorted ids shuffled by "
        f"random.Random({args.seed}); "
        f"val = {args.n_val} of the rest shuffled by random.Random({args.seed + 1})"
    )
    return {"split": split, "num_classes": 2, "class_names": ["background", "lesion"], "how": how}


# ----------------------------------------------------------------------------- ACDC


def read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f["image"], dtype=np.float32), np.asarray(f["label"], dtype=np.uint8)
    except (OSError, KeyError) as e:
        fail(f"{path}: cannot read 'image' and 'label' ({e})")
        raise


def save_nifti(array_zhw: np.ndarray, path: Path) -> None:
    """(Z, H, W) -> NIfTI with unit spacing. nibabel stores axes (x, y, z) = (W, H, Z); SimpleITK,
    which nnU-Net uses, reads that file back as the (Z, H, W) array. The SSL4MIS files carry no
    spacing, so 1 is written for every axis (nnU-Net's 2d configuration then resamples nothing)."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ascontiguousarray(array_zhw.transpose(2, 1, 0)), np.eye(4)), str(path))


def prepare_acdc(src: Path, work: Path, args: argparse.Namespace) -> dict:
    folders = {"train": "volumes_train", "val": "volumes_val", "test": "volumes"}
    files = {k: sorted((src / d).glob("*.h5")) for k, d in folders.items()}
    for k, d in folders.items():
        if not files[k]:
            fail(f"{src / d}: no .h5 volumes")
    split = {k: [p.stem for p in v] for k, v in files.items()}
    raw = work / "nnunet_raw" / DATASETS["acdc"][1]
    for k, paths in files.items():
        for path in paths:
            image, label = read_h5(path)
            if image.ndim != 3 or image.shape != label.shape:
                fail(
                    f"{path}: expected 3-D image and label of one shape, got {image.shape} and {label.shape}"
                )
            shutil.copyfile(path, work / "medseg_data" / "volumes" / path.name)
            if k == "test":
                save_nifti(image, raw / "imagesTs" / f"{path.stem}_0000.nii.gz")
                np.save(work / "reference" / f"{path.stem}.npy", label)
                link(work / "medseg_data" / "volumes" / path.name, work / "test_input" / path.name)
            else:
                save_nifti(image, raw / "imagesTr" / f"{path.stem}_0000.nii.gz")
                save_nifti(label, raw / "labelsTr" / f"{path.stem}.nii.gz")
    dataset_json = {
        "channel_names": {"0": "MRI"},
        "labels": {name: k for k, name in enumerate(ACDC_CLASSES)},
        "numTraining": len(split["train"]) + len(split["val"]),
        "file_ending": ".nii.gz",
    }
    write_json(raw / "dataset.json", dataset_json)
    how = "ACDC SSL4MIS volumes: train = volumes_train/, val = volumes_val/, test = volumes/ (source split)"
    return {"split": split, "num_classes": 4, "class_names": ACDC_CLASSES, "how": how}


# ----------------------------------------------------------------------------- main


def make_folders(work: Path, dataset: str) -> None:
    raw = work / "nnunet_raw" / DATASETS[dataset][1]
    subdirs = ["imagesTr", "labelsTr", "imagesTs"]
    for d in subdirs:
        (raw / d).mkdir(parents=True)
    data = work / "medseg_data"
    for d in ["images", "masks"] if dataset == "ph2" else ["volumes"]:
        (data / d).mkdir(parents=True)
    (work / "reference").mkdir()
    (work / "test_input").mkdir()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("work", type=Path, help="new folder for this benchmark (must not exist yet)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MEDSEG_DATA", "../shared/data")))
    ap.add_argument("--seed", type=int, default=0, help="PH2 split seed")
    ap.add_argument("--factor", type=int, default=3, help="PH2 downsampling factor")
    ap.add_argument("--test-fraction", type=float, default=0.25, help="PH2 test fraction")
    ap.add_argument("--n-val", type=int, default=8, help="PH2 validation images")
    ap.add_argument(
        "--test-block",
        type=int,
        default=0,
        help="PH2: which block of the seeded shuffle is the test set (0 = the first 25 %%; "
        "blocks 0-3 of one seed have disjoint test images)",
    )
    args = ap.parse_args(argv)
    src = args.data / args.dataset
    if not src.is_dir():
        fail(f"{src}: no such dataset folder (set --data or MEDSEG_DATA)")
    if args.work.exists():
        fail(f"{args.work}: already exists; the split is written once (remove it to start over)")
    tmp = args.work.with_name(args.work.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    make_folders(tmp, args.dataset)
    info = (prepare_ph2 if args.dataset == "ph2" else prepare_acdc)(src, tmp, args)
    split = info.pop("split")
    for k in ("train", "val", "test"):
        write_list(tmp / "medseg_data" / f"{k}.txt", split[k])
    write_json(tmp / "splits_final.json", [{"train": split["train"], "val": split["val"]}])
    number, name = DATASETS[args.dataset]
    meta = {"dataset": args.dataset, "source": str(src), "seed": args.seed, **info}
    meta["nnunet"] = {"dataset_id": number, "dataset_name": name}
    write_json(tmp / "split.json", {**meta, **split})
    tmp.rename(args.work)  # nothing half-written: WORK appears only when complete
    print(f"{args.work}: " + ", ".join(f"{len(split[k])} {k}" for k in ("train", "val", "test")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

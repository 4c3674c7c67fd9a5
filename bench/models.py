"""Model-zoo speed and memory against segmentation_models_pytorch and torchvision.

Run in the bench environment (peers installed there, CPU torch):

    .venv-bench/bin/python bench/models.py [--size 256] [--batch 2] [--repeats 5]

Each group compares models of the same design at the same backbone and input: medseg's
matched-design configuration comes first (the reference of the ratios), then, where the
paper's design differs, medseg's paper configuration, then the peers. ``--shipped`` runs
medseg as shipped (its preferred memory format; Conv-BN folded by ``fuse_conv_bn`` for
inference) against each peer twice, in its default format and in channels_last, so that
medseg meets the best each peer can do; ``--channels-last`` instead puts every model in
channels_last.

Timings are interleaved (every repeat runs every model once, in turn) so that the
noise of a shared machine hits all models alike; medians are reported, with the ratio
time / matched medseg time (> 1: medseg faster). Peak memory is measured in a fresh
subprocess per model: the growth of the resident set size (sampled every millisecond)
over the built model, during two inference steps and then two training steps.

``--crf`` instead measures the dense-CRF Dice change on PH2 with a briefly trained
model (see docs/bench/models.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _medseg(name: str, **kw):
    def make(classes: int):
        from medseg.models import build_model

        return build_model(name, 3, classes, **kw)

    return make


def _smp(cls: str, **kw):
    def make(classes: int):
        import segmentation_models_pytorch as smp

        return getattr(smp, cls)(encoder_weights=None, classes=classes, **kw)

    return make


def _tv(fn: str):
    def make(classes: int):
        import torchvision.models.segmentation as seg

        net = getattr(seg, fn)(weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)

        class Plain(torch.nn.Module):  # torchvision returns a dict
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x)["out"]

        return Plain()

    return make


# group -> [(label, kind, builder)]; kind "medseg" or "peer"; the first entry is the reference
MODELS: dict[str, list[tuple[str, str, object]]] = {
    "DeepLab v3, ResNet-50, OS 8": [
        (
            "medseg deeplabv3 (matched: OS 8, no multi-grid)",
            "medseg",
            _medseg("deeplabv3", backbone="resnet50", output_stride=8, multi_grid=None),
        ),
        ("torchvision deeplabv3_resnet50", "peer", _tv("deeplabv3_resnet50")),
        ("smp DeepLabV3", "peer", _smp("DeepLabV3", encoder_name="resnet50")),
    ],
    "DeepLab v3+, ResNet-50, OS 16": [
        ("medseg deeplabv3plus (matched)", "medseg", _medseg("deeplabv3plus", backbone="resnet50")),
        (
            "smp DeepLabV3Plus",
            "peer",
            _smp("DeepLabV3Plus", encoder_name="resnet50", encoder_output_stride=16),
        ),
    ],
    "PSPNet, ResNet-50": [
        (
            "medseg pspnet (matched: layer2 features, 1x1 head)",
            "medseg",
            _medseg("pspnet", backbone="resnet50", feature_layer="layer2", head_kernel=1, dropout=0.2),
        ),
        (
            "medseg pspnet (paper design: OS 8 dilated, aux head)",
            "medseg",
            _medseg("pspnet", backbone="resnet50"),
        ),
        ("smp PSPNet (encoder_depth 3)", "peer", _smp("PSPNet", encoder_name="resnet50")),
    ],
    "FCN, ResNet-50": [
        (
            "medseg fcn32s (matched: OS 8 dilated, 3x3 head 512)",
            "medseg",
            _medseg("fcn32s", backbone="resnet50", output_stride=8, head_conv=512, dropout=0.1),
        ),
        ("medseg fcn8s (paper design: OS 32 + skips)", "medseg", _medseg("fcn8s", backbone="resnet50")),
        ("torchvision fcn_resnet50 (OS 8, dilated)", "peer", _tv("fcn_resnet50")),
    ],
    "U-Net, ResNet-34 encoder": [
        ("medseg unet_resnet (matched: ResNet-34)", "medseg", _medseg("unet_resnet", backbone="resnet34")),
        ("smp Unet (ResNet-34 encoder)", "peer", _smp("Unet", encoder_name="resnet34")),
    ],
    "U-Net, paper design": [
        ("medseg unet (paper design, BN)", "medseg", _medseg("unet")),
    ],
}


@dataclass(frozen=True)
class Entry:
    label: str
    make: object
    memory_format: bool | str  # resolved per model by medseg.models.base.resolve_memory_format
    fuse: bool  # fold Conv-BN for inference (medseg.models.fuse.fuse_conv_bn)


def entries(shipped: bool, channels_last: bool) -> dict[str, list[Entry]]:
    """The runs of each group. ``shipped``: medseg in its preferred format with folded BN at
    inference, each peer in its default format and in channels_last. Otherwise every model in
    channels_last or in the default format, as ``channels_last`` says."""
    out: dict[str, list[Entry]] = {}
    for group, items in MODELS.items():
        runs = out.setdefault(group, [])
        for label, kind, make in items:
            if not shipped:
                runs.append(Entry(label, make, channels_last, False))
            elif kind == "medseg":
                runs.append(Entry(f"{label} [shipped]", make, "auto", True))
            else:
                runs.append(Entry(label, make, False, False))
                runs.append(Entry(f"{label} [channels_last]", make, True, False))
    return out


def _prepare(entry: Entry, classes: int):
    """(training model, inference model, memory format); the inference model is a Conv-BN folded
    copy taken at build time when ``entry.fuse`` (its weights do not follow training: timing only)."""
    from medseg.models.base import resolve_memory_format
    from medseg.models.fuse import fuse_conv_bn

    torch.manual_seed(0)
    model = entry.make(classes)
    fmt = resolve_memory_format(model, entry.memory_format)
    model = model.to(memory_format=fmt)
    infer = fuse_conv_bn(model) if entry.fuse else model  # the deep copy keeps the format
    return model, infer, fmt


def _step(model, infer, opt, x, y, train: bool) -> None:
    if train:
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    else:
        infer.eval()
        with torch.inference_mode():
            infer(x)


def _inputs(batch: int, size: int, classes: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, classes, (batch, size, size), generator=g)
    return x, y


def _rss_peak_during(fn) -> tuple[float, float]:
    """(RSS before, peak RSS while ``fn`` runs) in MiB, sampled every millisecond by a thread
    (torch kernels release the GIL); freed heap is first returned to the OS (malloc_trim),
    so new activations show up as RSS growth."""
    import ctypes
    import gc
    import threading

    import psutil

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return base / 2**20, peak[0] / 2**20


def memory_child(label: str, args) -> None:
    """Peak RSS growth over the built model, for two inference steps, then two training steps
    (SGD with momentum: gradients and momentum buffers count as training memory)."""
    entry = {e.label: e for runs in entries(args.shipped, args.channels_last).values() for e in runs}[label]
    model, infer, fmt = _prepare(entry, args.classes)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = _inputs(args.batch, args.size, args.classes)
    x = x.contiguous(memory_format=fmt)
    out = {}
    for mode in ("infer", "train"):
        train = mode == "train"
        base, peak = _rss_peak_during(lambda t=train: [_step(model, infer, opt, x, y, t) for _ in range(2)])
        out[mode] = peak - base
    print(json.dumps(out))


def run(args) -> None:
    """One group at a time (only its models in memory); repeats interleaved inside a group."""
    import gc

    torch.set_num_threads(args.threads)
    x0, y = _inputs(args.batch, args.size, args.classes)
    mode = (
        "shipped (medseg: preferred format + folded BN at inference; peers: default and channels_last)"
        if args.shipped
        else f"channels_last {args.channels_last}"
    )
    print(
        f"input {args.batch}x3x{args.size}x{args.size}, {args.classes} classes, threads {args.threads}, "
        f"repeats {args.repeats}, {mode}, torch {torch.__version__}\n"
    )
    print(
        "| model | params (M) | inference img/s | train img/s | peak mem infer / train (MiB) "
        "| time / matched medseg time (infer, train) |"
    )
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    for group, runs in entries(args.shipped, args.channels_last).items():
        runs = [e for e in runs if not args.only or any(o in e.label for o in args.only)]
        if not runs:
            continue
        labels = [e.label for e in runs]
        models, infers, opts, params, xs = {}, {}, {}, {}, {}
        for e in runs if not args.memory_only else []:
            lab = e.label
            models[lab], infers[lab], fmt = _prepare(e, args.classes)
            xs[lab] = x0.contiguous(memory_format=fmt)
            opts[lab] = torch.optim.SGD(models[lab].parameters(), lr=1e-3, momentum=0.9)
            params[lab] = sum(p.numel() for p in models[lab].parameters())
            for train in (False, True):  # warm-up
                _step(models[lab], infers[lab], opts[lab], xs[lab], y, train)
        times: dict[tuple[str, str], list[float]] = {
            (lab, m): [] for lab in labels for m in ("infer", "train")
        }
        for _ in range(0 if args.memory_only else args.repeats):
            for lab in labels:
                for m in ("infer", "train"):
                    t = time.perf_counter()
                    _step(models[lab], infers[lab], opts[lab], xs[lab], y, m == "train")
                    times[lab, m].append(time.perf_counter() - t)
        del models, infers, opts
        gc.collect()
        mem = {}
        if not args.no_memory:
            for lab in labels:
                cmd = [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    lab,
                    "--batch",
                    str(args.batch),
                    "--size",
                    str(args.size),
                    "--classes",
                    str(args.classes),
                    "--threads",
                    str(args.threads),
                ]
                cmd += ["--channels-last"] * args.channels_last + ["--shipped"] * args.shipped
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                mem[lab] = json.loads(out.strip().splitlines()[-1])
        print(f"| **{group}** | | | | | |")
        if args.memory_only:
            for lab in labels:
                print(f"| {lab} | | | | {mem[lab]['infer']:.0f} / {mem[lab]['train']:.0f} | |", flush=True)
            continue
        med = {k: statistics.median(v) for k, v in times.items()}
        first = next(iter(entries(args.shipped, args.channels_last)[group])).label
        ref = first if first in labels else None
        for lab in labels:
            ips = {m: args.batch / med[lab, m] for m in ("infer", "train")}
            ratio = ""
            if ref is not None and lab != ref:
                ratio = f"{med[lab, 'infer'] / med[ref, 'infer']:.2f}, {med[lab, 'train'] / med[ref, 'train']:.2f}"
            m = f"{mem[lab]['infer']:.0f} / {mem[lab]['train']:.0f}" if mem else "n/a"
            print(
                f"| {lab} | {params[lab] / 1e6:.1f} | {ips['infer']:.2f} | {ips['train']:.2f} | {m} | {ratio} |",
                flush=True,
            )


def _ph2(root: Path, size: tuple[int, int]):
    import numpy as np
    from PIL import Image

    ids = sorted(p.stem for p in (root / "images").glob("*.png"))
    imgs, masks = [], []
    for i in ids:
        img = Image.open(root / "images" / f"{i}.png").convert("RGB").resize(size[::-1], Image.BILINEAR)
        mask = Image.open(root / "masks" / f"{i}.png").convert("L").resize(size[::-1], Image.NEAREST)
        imgs.append(np.asarray(img))
        masks.append(np.asarray(mask) > 127)
    return ids, np.stack(imgs), np.stack(masks)


def run_crf(args) -> None:
    """Train a small model briefly on 48 PH2 images (96x128), predict the other 16, upsample the
    probabilities to 288x384 and compare Dice before / after dense_crf at that size."""
    import os

    import numpy as np

    from medseg.inference import dense_crf, predict_proba
    from medseg.models import build_model

    torch.set_num_threads(args.threads)
    root = Path(os.environ.get("MEDSEG_DATA", "../shared/data")) / "ph2"
    ids, imgs_hr, masks_hr = _ph2(root, (288, 384))
    _, imgs, masks = _ph2(root, (96, 128))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ids))
    train, test = order[:48], order[48:]
    mean, std = imgs[train].mean((0, 1, 2)), imgs[train].std((0, 1, 2))
    x = torch.from_numpy(((imgs - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
    y = torch.from_numpy(masks).long()
    torch.manual_seed(0)
    model = build_model(args.crf_model, 3, 2, **json.loads(args.crf_options))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for step in range(args.crf_steps):
        idx = torch.from_numpy(rng.choice(train, 8, replace=False))
        xb, yb = x[idx], y[idx]
        if rng.random() < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        model.train()
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()

    def dice(a, b):
        return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)

    rows = []
    crf_time = 0.0
    for i in test:
        p = predict_proba(model, x[i : i + 1])
        p_hr = F.interpolate(p, size=(288, 384), mode="bilinear", align_corners=False)[0].numpy()
        t = time.perf_counter()
        q = dense_crf(
            imgs_hr[i],
            p_hr,
            5,
            sxy_bilateral=args.crf_sxy,
            srgb_bilateral=args.crf_srgb,
            compat_bilateral=args.crf_w,
        )
        crf_time += time.perf_counter() - t
        rows.append((dice(p_hr[1] > 0.5, masks_hr[i]), dice(q[1] > 0.5, masks_hr[i])))
    d = np.array(rows)
    print(
        f"\nPH2, {len(train)} train / {len(test)} test images, model {args.crf_model} "
        f"{args.crf_options}, {args.crf_steps} Adam steps (batch 8, 96x128), "
        f"Dice at 288x384; CRF 5 iterations, w_bilateral {args.crf_w}, theta_alpha {args.crf_sxy}, "
        f"theta_beta {args.crf_srgb}, w_gauss 3, theta_gamma 3"
    )
    print(
        f"mean Dice without CRF {d[:, 0].mean():.4f}, with CRF {d[:, 1].mean():.4f}, "
        f"change {d[:, 1].mean() - d[:, 0].mean():+.4f}; improved on {(d[:, 1] > d[:, 0]).sum()}/{len(d)} "
        f"images; CRF time {crf_time / len(d):.2f} s per 288x384 image"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true", help="every model (and input) in channels_last")
    ap.add_argument(
        "--shipped",
        action="store_true",
        help="medseg as shipped (preferred memory format, Conv-BN folded at inference) against "
        "each peer in its default format and in channels_last",
    )
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="skip the timings")
    ap.add_argument("--only", nargs="*", help="substrings of model labels to keep")
    ap.add_argument("--memory-child", metavar="LABEL", help=argparse.SUPPRESS)
    ap.add_argument("--crf", action="store_true", help="measure the dense-CRF Dice change on PH2")
    ap.add_argument("--crf-model", default="deeplabv1")
    ap.add_argument("--crf-options", default='{"width_mult": 0.25, "fc_width": 256}')
    ap.add_argument("--crf-steps", type=int, default=300)
    ap.add_argument("--crf-w", type=float, default=10.0)
    ap.add_argument("--crf-sxy", type=float, default=40.0)
    ap.add_argument("--crf-srgb", type=float, default=13.0)
    args = ap.parse_args()
    if args.shipped and args.channels_last:
        ap.error("--shipped already runs every peer in both formats; drop --channels-last")
    if args.memory_child:
        torch.set_num_threads(args.threads)
        memory_child(args.memory_child, args)
    elif args.crf:
        run_crf(args)
    else:
        run(args)


if __name__ == "__main__":
    main()

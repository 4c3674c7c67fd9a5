"""Would a faster KD-tree close the gap on dissimilar masks? medseg's HD95 with SciPy's cKDTree
(shipped) against the same code with pykdtree for its far-voxel queries, interleaved in one process.

pykdtree is not a medseg dependency; install it next to medseg to run this (any venv):

    pip install pykdtree
    OMP_NUM_THREADS=1 python bench/metrics_kdtree.py [--sizes 3d128,3d64,2d256,2d512] [--leafsize 16]

The pairs are ``bench/metrics.py``'s (``make_pair``). For each pair the two back-ends run in turn,
repeat after repeat; the medians of process CPU time are printed with both values (they must be
equal: both trees are exact in float64). ``OMP_NUM_THREADS=1``: pykdtree parallelises its queries
with its own OpenMP runtime, whose spinning threads count as CPU time (docs/bench/metrics.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from metrics import SIZES, make_pair

import medseg.metrics.surface_distance as sd
from medseg.metrics import hd95


class PyKDTree:
    """pykdtree behind the part of SciPy's ``cKDTree`` interface that medseg's surface distances use
    (constructor keywords it has no use for are ignored; ``query`` returns int64 indices)."""

    leafsize = 16

    def __init__(self, data: np.ndarray, **_: object) -> None:
        from pykdtree.kdtree import KDTree

        self.tree = KDTree(np.ascontiguousarray(data, dtype=np.float64), leafsize=self.leafsize)

    def query(self, x: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = self.tree.query(np.ascontiguousarray(x, dtype=np.float64), k=k)
        return dist, idx.astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="3d128,3d64,2d256,2d512")
    ap.add_argument("--kinds", default="typical,hard,dissimilar")
    ap.add_argument("--leafsize", type=int, default=16)
    args = ap.parse_args()
    PyKDTree.leafsize = args.leafsize
    shipped = sd.cKDTree
    backends = {"cKDTree (shipped)": shipped, "pykdtree": PyKDTree}
    print("| case | Dice | cKDTree CPU ms | pykdtree CPU ms | speed-up | values equal |")
    print("|---|---:|---:|---:|---:|---|")
    for key in args.sizes.split(","):
        label, shape, spacing = SIZES[key]
        for kind in args.kinds.split(","):
            p, t = make_pair(shape, 0, kind)
            cpu: dict[str, list[float]] = {name: [] for name in backends}
            values = {}
            for _ in range(7 if len(shape) == 3 else 21):
                for name, tree in backends.items():
                    sd.cKDTree = tree  # the one name both far-voxel KD-trees are built with
                    c = time.process_time()
                    values[name] = hd95(p, t, spacing)
                    cpu[name].append(time.process_time() - c)
            a, b = (statistics.median(cpu[n]) * 1e3 for n in backends)
            dice = 2 * (p & t).sum() / (p.sum() + t.sum())
            same = len(set(values.values())) == 1
            print(f"| {label}, {kind} | {dice:.2f} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {same} |", flush=True)
    sd.cKDTree = shipped


if __name__ == "__main__":
    main()

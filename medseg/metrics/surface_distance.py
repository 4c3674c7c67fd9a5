"""Exact directed boundary distances between two binary masks: the engine behind the surface metrics.

Boundary ∂A of a mask A: the voxels of A with a face-neighbour (2·D-connectivity) outside A, the
space outside the array counting as background (``A XOR erode(A)``, as MONAI ``get_mask_edges`` and
medpy). For every a in ∂A we want d(a, ∂B) = min over b in ∂B of ||(a - b) * spacing||_2, exactly.

Every path below finds the *nearest boundary voxel* (an integer offset) and then computes the
distance with one formula, ``sqrt(sum((offset * spacing) ** 2))``, so the paths agree to the last bit
up to ties between equally near voxels (docs/bench/metrics.md has the measurements):

1. Shared boundary voxels have distance 0.
2. Near voxels: for every voxel offset within a small physical radius, shortest first, the still
   unresolved voxels whose offset neighbour is a boundary voxel of the other mask get that offset
   (the first hit is the nearest partner, so the result is exact). Offsets are tried in blocks; the
   search stops early when the rest of the voxels are mostly far away.
3. Far voxels (no partner within the radius), exact, by the cheaper of two methods for the case at
   hand (a cost estimate from the voxel counts, calibrated on this project's machine):
   - a KD-tree over the other boundary's voxels (Bentley 1975; SciPy ``cKDTree``), built only over
     the voxels that can be nearest to some query when the queries are few;
   - the Euclidean feature transform of the other boundary on the box that contains the queries and
     every voxel that can be nearest to one of them (Maurer et al. 2003, exact for anisotropic
     spacing; SciPy ``distance_transform_edt(return_indices=True)``), read only at the queries.
   The box is bounded with the upper bounds from a KD-tree over a sparse subset of the other
   boundary: a voxel farther from every query than that query's upper bound cannot be its nearest.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

Method = Literal["auto", "grid", "kdtree", "edt"]
FarMethod = Literal["auto", "kdtree", "ft"]

# neighbour search: at least this many offsets (2D, 3D+). Measured with bench/metrics.py: most
# boundary voxels of a reasonable prediction find their partner within this radius, and the
# blocked search below makes a larger ball cheap.
_BALL_SIZE = {2: 150, 3: 500}
_BLOCKS = (4, 8, 16, 32, 64, 128)
_STOP_RATIO = 200.0
# far voxels, CPU seconds per unit (bench/metrics.py --calibrate, 2-core x86-64 machine): feature
# transform per voxel of its box, KD-tree build per indexed voxel, KD-tree query per far voxel.
_COST_FT = {2: 45e-9, 3: 95e-9}
_COST_KD_BUILD = 0.08e-6
_COST_KD_QUERY = {2: 0.45e-6, 3: 1.0e-6}


def bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels (None when there are none): one reduction pass per axis level."""
    rows = mask.reshape(mask.shape[0], -1).any(axis=1)
    nz = np.flatnonzero(rows)
    if nz.size == 0:
        return None
    first = slice(int(nz[0]), int(nz[-1]) + 1)
    if mask.ndim == 1:
        return (first,)
    rest = bbox(np.asarray(mask[first].any(axis=0)))
    assert rest is not None
    return (first, *rest)


def union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """The smallest box holding both boxes (None stands for an empty box)."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def boundary(mask: np.ndarray, pad: Sequence[int] | None = None) -> np.ndarray:
    """Boundary voxels of a boolean mask: A AND NOT erode(A), face connectivity, zero outside.

    With ``pad``, the result is embedded in a zero array padded by ``pad[i]`` voxels on both sides of
    axis i (the layout the neighbour search below works on).
    """
    shape = mask.shape
    k_pad = [1] * mask.ndim if pad is None else [max(1, int(x)) for x in pad]
    out = np.zeros(tuple(n + 2 * k for n, k in zip(shape, k_pad)), dtype=bool)
    inner = tuple(slice(k, k + n) for n, k in zip(shape, k_pad))
    out[inner] = mask
    interior = mask.copy()
    for ax in range(mask.ndim):
        for step in (-1, 1):
            sl = list(inner)
            sl[ax] = slice(k_pad[ax] + step, k_pad[ax] + step + shape[ax])
            interior &= out[tuple(sl)]
    out[inner] &= ~interior
    return out[inner] if pad is None else out


@lru_cache(maxsize=64)
def _ball(spacing: tuple[float, ...], radius: float) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Non-zero voxel offsets within ``radius`` (physical units), sorted by length; and their lengths."""
    s = np.asarray(spacing, dtype=np.float64)
    reach = tuple(int(max(1, np.floor(radius / x + 1e-9))) for x in s)
    grids = np.meshgrid(*[np.arange(-k, k + 1) for k in reach], indexing="ij")
    off = np.stack([g.ravel() for g in grids], axis=1)
    length = offset_length(off, s)
    keep = (length > 0) & (length <= radius * (1 + 1e-12))
    off, length = off[keep], length[keep]
    order = np.argsort(length, kind="stable")
    return off[order], length[order], reach


def offset_length(off: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Physical length of integer voxel offsets [n, D]: the one distance formula of this module."""
    return np.sqrt(((off * spacing) ** 2).sum(axis=1))


@lru_cache(maxsize=64)
def _search_ball(s: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The neighbour-search offsets for this spacing: the smallest ball with enough offsets."""
    want = _BALL_SIZE.get(len(s), 250)
    r = max(s)
    while _ball(s, r)[1].size < want:
        r += min(s)
    return _ball(s, r)


def _blocks(n: int) -> list[int]:
    sizes, total, i = [], 0, 0
    while total < n:
        size = min(_BLOCKS[min(i, len(_BLOCKS) - 1)], n - total)
        sizes.append(size)
        total += size
        i += 1
    return sizes


def _grid_search(
    b: np.ndarray, q: np.ndarray, flat_off: np.ndarray, length: np.ndarray, dist: np.ndarray, todo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Near voxels: resolve queries ``q`` (flat indices) whose partner is within the offset ball;
    return the unresolved queries and their positions in ``dist``."""
    start = 0
    for size in _blocks(flat_off.size):
        if q.size == 0:
            break
        # offsets are sorted by length: the first hit in a block is the nearest partner,
        # as no earlier block had one
        hits = b[flat_off[start : start + size, None] + q[None, :]]  # [offset, voxel]: fast reductions
        found = np.logical_or.reduce(hits, axis=0)
        n_found = int(np.count_nonzero(found))
        if n_found:
            dist[todo[found]] = length[start + hits[:, found].argmax(axis=0)]
            miss = ~found
            q, todo = q[miss], todo[miss]
        start += size
        if n_found * _STOP_RATIO < (q.size + n_found) * size:
            break  # the rest are mostly far away: the far-voxel path is cheaper for them
    return q, todo


def _upper_bounds(sites: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Per-query upper bounds on the nearest distance (physical coordinates), from a sparse subset."""
    sub = sites[:: max(1, sites.shape[0] // 1024)]
    return cKDTree(sub, leafsize=64).query(queries, k=1)[0] * (1 + 1e-9) + 1e-9


def _mark_boxes(lo: np.ndarray, hi: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean grid of ``shape`` with every box ``[lo[i], hi[i]]`` (inclusive, integer corners, already
    clipped to the grid) set: a difference array (+1/-1 at the 2**D corners) summed along each axis."""
    d = len(shape)
    diff = np.zeros(int(np.prod([n + 1 for n in shape])), dtype=np.int64)
    strides = np.cumprod([1, *[n + 1 for n in shape[::-1]]])[:-1][::-1]
    for corner in np.ndindex(*(2,) * d):
        pick = np.array(corner, dtype=bool)
        at = np.where(pick, hi + 1, lo) @ strides
        sign = -1 if int(pick.sum()) % 2 else 1
        diff += np.bincount(at, minlength=diff.size) * sign
    grid = diff.reshape([n + 1 for n in shape])
    for ax in range(d):
        np.cumsum(grid, axis=ax, out=grid)
    return grid[tuple(slice(0, n) for n in shape)] > 0


def _candidate_sites(
    sites: np.ndarray, queries: np.ndarray, spacing: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Indices of the sites that can be nearest to some query (a superset, exact).

    The nearest site of q lies within ub(q) of q (an upper bound from a sparse subset), so inside the
    axis-aligned box q +- ub(q). The boxes are marked on a coarse grid (cells of 2**k voxels per axis,
    about ``8 * min(spacing)`` wide) and the sites in marked cells are kept: scattered queries
    (typical predictions) keep a fraction of the sites, which makes the KD-tree build (the bulk of
    the cost for few queries) cheaper."""
    ub = _upper_bounds(sites * spacing, queries * spacing)
    shift = np.maximum(0, np.round(np.log2(8 * spacing.min() / spacing))).astype(np.int64)
    grid = tuple(int(n) for n in ((np.asarray(shape) - 1) >> shift) + 1)
    reach = ub[:, None] / spacing  # voxels, per axis
    lo = np.maximum(np.floor(queries - reach).astype(np.int64), 0) >> shift
    hi = np.minimum(np.ceil(queries + reach).astype(np.int64) >> shift, np.asarray(grid) - 1)
    needed = _mark_boxes(lo, hi, grid).ravel()
    cell_stride = np.cumprod([1, *grid[::-1]])[:-1][::-1]
    return np.flatnonzero(needed[(sites >> shift) @ cell_stride])


def _kdtree_nearest(
    sites: np.ndarray, queries: np.ndarray, spacing: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Index (into ``sites``, integer voxel coordinates) of the nearest site of every query, by KD-tree;
    with few queries the tree is built only over the sites that can be nearest."""
    pts_q = queries * spacing
    keep = None
    if sites.shape[0] > 4096 and queries.shape[0] * 8 < sites.shape[0]:
        keep = _candidate_sites(sites, queries, spacing, shape)
        sites = sites[keep]
    tree = cKDTree(
        sites * spacing, leafsize=64, balanced_tree=False, compact_nodes=False
    )  # fastest build here
    nearest = tree.query(pts_q, k=1)[1]
    return nearest if keep is None else keep[nearest]


def _ft_nearest(
    b: np.ndarray, queries: np.ndarray, spacing: np.ndarray, box: tuple[slice, ...]
) -> np.ndarray:
    """Integer coordinates of the nearest True voxel of ``b`` for every query, from the exact
    Euclidean feature transform of ``b`` computed on ``box`` (which must hold the queries and every
    voxel that can be nearest to one)."""
    start = np.array([sl.start for sl in box], dtype=np.int64)
    ft = ndimage.distance_transform_edt(
        ~b[box], sampling=tuple(float(x) for x in spacing), return_distances=False, return_indices=True
    )
    local = queries - start
    return np.stack([ft[ax][tuple(local.T)] for ax in range(b.ndim)], axis=1).astype(np.int64) + start


def _far_box(
    b_sites: np.ndarray, queries: np.ndarray, spacing: np.ndarray, shape: tuple[int, ...]
) -> tuple[slice, ...]:
    """A box holding the queries and every site that can be nearest to one of them."""
    ub = _upper_bounds(b_sites * spacing, queries * spacing)
    reach = np.ceil(ub.max() / spacing).astype(np.int64)
    lo = np.maximum(queries.min(axis=0) - reach, 0)
    hi = np.minimum(queries.max(axis=0) + reach + 1, shape)
    return tuple(slice(int(a), int(z)) for a, z in zip(lo, hi))


def _choose_far(
    b: np.ndarray, sites: np.ndarray, queries: np.ndarray, spacing: np.ndarray
) -> tuple[slice, ...] | None:
    """The feature-transform box when the cost estimate prefers it over the KD-tree, else None.

    The box's volume lies between the queries' bounding box and the whole array, so the box (which
    needs a sparse KD-tree query) is computed only when those two bounds do not decide already."""
    d = b.ndim if b.ndim in _COST_FT else 3
    kd_cost = _COST_KD_BUILD * sites.shape[0] + _COST_KD_QUERY[d] * queries.shape[0]
    least = float(np.prod(queries.max(axis=0) - queries.min(axis=0) + 1))
    if _COST_FT[d] * least >= kd_cost:
        return None
    full = tuple(slice(0, n) for n in b.shape)
    if _COST_FT[d] * float(b.size) < kd_cost:
        return full
    box = _far_box(sites, queries, spacing, b.shape)
    volume = float(np.prod([sl.stop - sl.start for sl in box]))
    return box if _COST_FT[d] * volume < kd_cost else None


def far_distances(
    b: np.ndarray,
    q: np.ndarray,
    spacing: np.ndarray,
    how: FarMethod = "auto",
    sites_flat: np.ndarray | None = None,
) -> np.ndarray:
    """Exact distances from the voxels at flat indices ``q`` to the nearest True voxel of ``b``.

    ``how``: ``"kdtree"``, ``"ft"`` (feature transform) or ``"auto"`` (the cheaper by the cost
    estimate of the module docstring). ``sites_flat``: ``np.flatnonzero(b)`` when already known.
    """
    if how not in ("auto", "kdtree", "ft"):
        raise ValueError(f"unknown far-voxel method {how!r}")
    flat = np.flatnonzero(b) if sites_flat is None else sites_flat
    queries = np.stack(np.unravel_index(q, b.shape), axis=1)
    sites = np.stack(np.unravel_index(flat, b.shape), axis=1)
    if how == "ft":
        box: tuple[slice, ...] | None = _far_box(sites, queries, spacing, b.shape)
    else:
        box = _choose_far(b, sites, queries, spacing) if how == "auto" else None
    if box is not None:
        nearest = _ft_nearest(b, queries, spacing, box)
    else:
        nearest = sites[_kdtree_nearest(sites, queries, spacing, b.shape)]
    return offset_length(nearest - queries, spacing)


def _directed(
    pred: np.ndarray, target: np.ndarray, spacing: np.ndarray, method: Method
) -> tuple[np.ndarray, np.ndarray]:
    """Directed boundary distances of two non-empty boolean masks (cropped), both ways.

    ``auto``: shared voxels, then the neighbour search, then the cheaper far-voxel path.
    ``grid``: the same with the KD-tree for far voxels. ``kdtree``: KD-tree queries for every voxel.
    ``edt``: one SciPy Euclidean distance transform per direction (the classic approach, as medpy).
    """
    if method == "edt":
        e_p, e_t = boundary(pred), boundary(target)
        d_pt = ndimage.distance_transform_edt(~e_t, sampling=tuple(float(x) for x in spacing))[e_p]
        d_tp = ndimage.distance_transform_edt(~e_p, sampling=tuple(float(x) for x in spacing))[e_t]
        return d_pt.astype(np.float64, copy=False), d_tp.astype(np.float64, copy=False)
    if method not in ("auto", "grid", "kdtree"):
        raise ValueError(f"unknown distance method {method!r}; choose 'auto', 'grid', 'kdtree' or 'edt'")
    if method == "kdtree":
        off, length, reach = np.zeros((0, pred.ndim), dtype=np.int64), np.zeros(0), (1,) * pred.ndim
    else:
        off, length, reach = _search_ball(tuple(float(x) for x in spacing))
    e_p, e_t = boundary(pred, reach), boundary(target, reach)
    flat_off = off @ (np.asarray(e_p.strides, dtype=np.int64) // e_p.itemsize)
    how: FarMethod = "auto" if method == "auto" else "kdtree"
    out = []
    idx_p, idx_t = np.flatnonzero(e_p), np.flatnonzero(e_t)
    for idx, b, idx_b in ((idx_p, e_t, idx_t), (idx_t, e_p, idx_p)):
        f_b = b.ravel()
        dist = np.zeros(idx.size, dtype=np.float64)
        todo = np.flatnonzero(~f_b[idx])  # positions (in idx) not on the other boundary
        q, todo = _grid_search(f_b, idx[todo], flat_off, length, dist, todo)
        if q.size:
            dist[todo] = far_distances(b, q, spacing, how, idx_b)
        out.append(dist)
    return out[0], out[1]


def distances_cropped(
    pred: np.ndarray, target: np.ndarray, spacing: np.ndarray, method: Method = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances for boolean masks already cropped to (at least) their joint bounding box.

    When one mask is empty the other side's distances are ``nan`` (undefined) and its own are empty.
    """
    if not pred.any() or not target.any():
        n_p = int(np.count_nonzero(boundary(pred))) if pred.any() else 0
        n_t = int(np.count_nonzero(boundary(target))) if target.any() else 0
        return np.full(n_p, np.nan), np.full(n_t, np.nan)
    return _directed(pred, target, spacing, method)

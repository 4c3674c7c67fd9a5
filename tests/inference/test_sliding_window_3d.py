"""N-dimensional sliding-window inference: 3-D volumes against whole-volume forwards and an
independent loop-and-numpy reference, Gaussian weights, mirroring TTA, odd sizes, padding."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from medseg.inference import predict_proba
from medseg.inference import sliding_window as sw


class Pointwise3d(nn.Module):
    """1x1x1 convolutions only: every output voxel depends on its own input voxel."""

    input_multiple = 1

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(2, 8, 1), nn.ReLU(), nn.Conv3d(8, k, 1))

    def forward(self, x):
        return self.net(x)


class Local3d(nn.Module):
    """Two 3x3x3 zero-padded convolutions: an output voxel sees its input neighbours up to
    ``RADIUS`` voxels away, and the zero padding makes window borders visible."""

    RADIUS = 2
    input_multiple = 1

    def __init__(self, symmetric: bool = False) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(2, 6, 3, padding=1), nn.Tanh(), nn.Conv3d(6, 3, 3, padding=1))
        if symmetric:  # kernels even in every axis -> the net commutes with every flip
            with torch.no_grad():
                for conv in (self.net[0], self.net[2]):
                    w = conv.weight
                    for d in (2, 3, 4):
                        w.copy_((w + w.flip(d)) / 2)

    def forward(self, x):
        return self.net(x)


class Pooled3d(nn.Module):
    """A non-local net (pooling, upsampling) that needs sizes divisible by 4."""

    input_multiple = 4

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool3d(4),
            nn.Conv3d(4, 2, 3, padding=1),
            nn.Upsample(scale_factor=4),
        )

    def forward(self, x):
        if any(s % 4 for s in x.shape[2:]):
            raise ValueError("sizes must be divisible by 4")
        return self.net(x)


def _starts(length: int, window: int, step: int) -> list[int]:
    """Window starts as documented: every ``step`` from 0, the last one flush with the end."""
    if length <= window:
        return [0]
    out = list(range(0, length - window, step)) + [length - window]
    assert out[-1] - out[-2] <= step
    return out


def _np_gaussian(size, sigma_scale=0.125):
    g = np.ones(())
    for n in size:
        t = np.arange(n) - (n - 1) / 2
        g = np.multiply.outer(g, np.exp(-(t**2) / (2 * (sigma_scale * n) ** 2)))
    g = np.maximum(g, max(g.min(), 1e-3))  # floor on the raw Gaussian product (MONAI's rule)
    return g / g.max()


def _reference_sliding(model, x, window, overlap, weight):
    """Loop over every window, forward it alone, blend with ``weight`` in float64 numpy."""
    b, _, *size = x.shape
    steps = [max(1, int(w * (1 - overlap))) for w in window]
    acc, norm = None, np.zeros(size)
    for corner in itertools.product(*(_starts(n, w, s) for n, w, s in zip(size, window, steps))):
        box = tuple(slice(c, c + w) for c, w in zip(corner, window))
        with torch.no_grad():
            p = torch.softmax(model(x[(slice(None), slice(None), *box)]), 1).double().numpy()
        if acc is None:
            acc = np.zeros((b, p.shape[1], *size))
        acc[(slice(None), slice(None), *box)] += p * weight
        norm[box] += weight
    return acc / norm


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(
    "size,window,overlap",
    [((19, 23, 17), (8, 8, 8), 0.5), ((13, 11, 21), (7, 9, 5), 0.25), ((9, 16, 12), (9, 5, 12), 0.0)],
)
def test_pointwise_3d_sliding_window_equals_whole_volume(blend, size, window, overlap):
    torch.manual_seed(0)
    model = Pointwise3d().eval()
    x = torch.randn(2, 2, *size)
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)
    out = predict_proba(model, x, window=window, overlap=overlap, blend=blend, batch_size=3)
    assert out.shape == ref.shape == (2, 3, *size)
    assert torch.allclose(out, ref, atol=1e-5)


def test_local_conv_equals_whole_volume_away_from_inner_window_faces():
    """A window's output is exact wherever its zero padding is out of reach: at least RADIUS
    voxels from each of its faces that lies inside the volume. Where every window covering a
    voxel is exact there, the blend is exact too; next to an inner face it must not be."""
    torch.manual_seed(0)
    model = Local3d().eval()
    size, window, overlap = (40, 36, 44), (24, 20, 28), 0.25
    x = torch.randn(1, 2, *size)
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)[0, 0].numpy()
    out = predict_proba(model, x, window=window, overlap=overlap, batch_size=5)[0, 0].numpy()
    near_face = np.zeros(size, dtype=bool)
    for axis, (n, w) in enumerate(zip(size, window)):
        faces = {s for s in _starts(n, w, int(w * (1 - overlap))) if s > 0}
        faces |= {s + w for s in _starts(n, w, int(w * (1 - overlap))) if s + w < n}
        coords = np.arange(n)
        hit = np.zeros(n, dtype=bool)
        for f in faces:
            hit |= (coords >= f - model.RADIUS) & (coords < f + model.RADIUS)
        near_face |= np.expand_dims(hit, [a for a in range(3) if a != axis])
    assert 0.1 < near_face.mean() < 0.9
    assert np.abs(out - ref)[~near_face].max() < 1e-5
    assert np.abs(out - ref)[near_face].max() > 1e-3  # the border effect is real, so the mask matters


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_non_local_model_matches_a_loop_reference(blend):
    torch.manual_seed(1)
    model = Pooled3d().eval()
    x = torch.randn(2, 1, 20, 28, 24)
    window, overlap = (12, 16, 8), 0.5
    weight = _np_gaussian(window) if blend == "gaussian" else np.ones(window)
    ref = _reference_sliding(model, x, window, overlap, weight)
    out = predict_proba(model, x, window=window, overlap=overlap, blend=blend, batch_size=4)
    assert np.abs(out.numpy() - ref).max() < 1e-5
    whole = predict_proba(model, x)
    assert (out - whole).abs().max() > 1e-3  # windows see less context: not the whole-volume answer


@pytest.mark.parametrize("size", [(16, 16, 16), (15, 8, 33), (1, 7, 4)])
def test_gaussian_importance_3d_matches_numpy(size):
    g = sw.gaussian_importance(size)
    ref = _np_gaussian(size)
    assert g.shape == size and g.dtype == torch.float32
    assert np.allclose(g.numpy(), ref, rtol=1e-5, atol=1e-7)
    assert float(g.min()) >= 1e-3 - 1e-9 and float(g.max()) == 1.0


def test_gaussian_importance_2d_unchanged_and_separable():
    g3 = sw.gaussian_importance((5, 9, 7))
    g2 = sw.gaussian_importance((9, 7))
    assert torch.allclose(g3[2], g2)  # the central plane of an odd window is the 2-D map


def test_mirroring_tta_of_flip_equivariant_model_equals_no_tta():
    torch.manual_seed(0)
    model = Local3d(symmetric=True).eval()
    x = torch.randn(1, 2, 11, 14, 9)
    with torch.no_grad():
        assert torch.allclose(model(x.flip(2, 4)).flip(2, 4), model(x), atol=1e-6)  # the premise
    for window in (None, (6, 8, 5)):
        plain = predict_proba(model, x, window=window)
        assert torch.allclose(predict_proba(model, x, window=window, tta=True), plain, atol=1e-5)
        assert torch.allclose(predict_proba(model, x, window=window, tta=(0, 2)), plain, atol=1e-5)


def test_mirroring_tta_averages_all_eight_flips():
    torch.manual_seed(0)
    model = Local3d().eval()  # not flip-equivariant
    x = torch.randn(1, 2, 8, 10, 6)
    combos = [d for r in range(4) for d in itertools.combinations((2, 3, 4), r)]
    assert len(combos) == 8
    with torch.no_grad():
        manual = sum(
            torch.softmax(model(x.flip(d)), 1).flip(d) if d else torch.softmax(model(x), 1) for d in combos
        )
    out = predict_proba(model, x, tta=True)
    assert torch.allclose(out, manual / 8, atol=1e-6)
    assert not torch.allclose(out, predict_proba(model, x), atol=1e-4)
    with torch.no_grad():
        only_d = (torch.softmax(model(x), 1) + torch.softmax(model(x.flip(2)), 1).flip(2)) / 2
    assert torch.allclose(predict_proba(model, x, tta=[0]), only_d, atol=1e-6)


def test_sliding_tta_mirrors_each_window():
    torch.manual_seed(0)
    model = Local3d().eval()
    x = torch.randn(1, 2, 12, 9, 10)
    window = (8, 6, 10)
    flips = sw.mirror_flips(3)

    class Averaged(nn.Module):  # the same net, averaged over the flips of its own input
        def forward(self, t):
            ps = [
                torch.softmax(model(t.flip(d)), 1).flip(d) if d else torch.softmax(model(t), 1) for d in flips
            ]
            return torch.log(sum(ps) / len(ps))

    ref = predict_proba(Averaged(), x, window=window)
    assert torch.allclose(predict_proba(model, x, window=window, tta=True), ref, atol=1e-5)


def test_mirror_flips():
    assert sw.mirror_flips(2) == sw.TTA_FLIPS
    three = sw.mirror_flips(3)
    assert len(set(three)) == 8 and three[0] == () and (-3, -2, -1) in three
    assert sw.mirror_flips(3, [0, 2]) == ((), (-1,), (-3,), (-3, -1))
    with pytest.raises(ValueError, match="spatial axes"):
        sw.mirror_flips(3, [3])


@pytest.mark.parametrize("pads", [((1, 2), (0, 3), (2, 2)), ((9, 4), (1, 13), (0, 0))])
def test_mirror_pad_nd_matches_numpy_reflect(pads):
    x = torch.randn(2, 1, 5, 6, 3)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), *pads), mode="reflect")
    assert np.array_equal(sw.mirror_pad_nd(x, pads).numpy(), ref)


def test_volume_smaller_than_the_window_is_mirror_padded():
    torch.manual_seed(0)
    model = Pointwise3d(k=1).eval()
    x = torch.randn(1, 2, 5, 3, 7)
    with torch.no_grad():
        ref = torch.sigmoid(model(x))
    out = predict_proba(model, x, window=(16, 16, 16), overlap=0.5)
    assert out.shape == (1, 1, 5, 3, 7) and torch.allclose(out, ref, atol=1e-6)
    pooled = Pooled3d().eval()
    y = torch.randn(1, 1, 5, 6, 7)
    padded = torch.from_numpy(np.pad(y.numpy(), ((0, 0), (0, 0), (0, 3), (0, 2), (0, 1)), mode="reflect"))
    with torch.no_grad():
        direct = torch.softmax(pooled(padded), 1)[..., :5, :6, :7]
    for window in ((8, 8, 8), (20, 30, 10)):  # one window covering the padded volume
        assert torch.allclose(predict_proba(pooled, y, window=window), direct, atol=1e-6)
    assert torch.allclose(predict_proba(pooled, y), direct, atol=1e-6)


def test_accumulator_goes_to_cpu_when_the_accelerator_is_short_of_memory(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 4000))
    assert sw.accumulator_device(cuda, 400) == cuda
    assert sw.accumulator_device(cuda, 600) == torch.device("cpu")
    assert sw.accumulator_device(torch.device("cpu"), 10**15) == torch.device("cpu")


def test_3d_argument_errors():
    model = Pointwise3d().eval()
    x = torch.randn(1, 2, 6, 6, 6)
    with pytest.raises(ValueError, match="3 positive sizes"):
        predict_proba(model, x, window=(4, 4))
    with pytest.raises(ValueError, match=r"\[B, C, D, H, W\]"):
        predict_proba(model, x[None])
    out = predict_proba(model, x, window=4, device="cpu")
    assert out.shape == (1, 3, 6, 6, 6) and out.device.type == "cpu"

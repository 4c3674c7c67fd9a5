"""The per-case probability file: round trip, sigmoid expansion, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.engine.probabilities import (
    labels_from_probabilities,
    load_probabilities,
    probability_files,
    save_probabilities,
)
from medseg.errors import DataError


def _softmax(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    z = rng.normal(size=shape)
    e = np.exp(z - z.max(0))
    return (e / e.sum(0)).astype(np.float32)


@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 2, 5, 6)])
def test_round_trip_keeps_values_classes_and_id(tmp_path, shape):
    probs = _softmax(np.random.default_rng(0), shape)
    names = [f"c{k}" for k in range(shape[0])]
    save_probabilities(tmp_path / "case 1.npz", probs, "case 1", names)
    back = load_probabilities(tmp_path / "case 1.npz")
    assert back.case_id == "case 1" and back.class_names == names
    assert back.probs.dtype == np.float32 and back.probs.shape == shape
    np.testing.assert_allclose(back.probs, probs, atol=1e-3)  # float16 storage
    with np.load(tmp_path / "case 1.npz") as z:
        assert z["probabilities"].dtype == np.float16
    assert list(probability_files(tmp_path)) == ["case 1"]


def test_sigmoid_map_is_stored_as_two_classes(tmp_path):
    p = np.array([[[0.2, 0.9], [0.6, 0.4]]], np.float32)
    save_probabilities(tmp_path / "a.npz", p, "a", ["background", "lesion"])
    back = load_probabilities(tmp_path / "a.npz")
    np.testing.assert_allclose(back.probs[1], p[0], atol=1e-3)
    np.testing.assert_allclose(back.probs.sum(0), 1.0, atol=2e-3)
    np.testing.assert_array_equal(back.labels(), (p[0] > 0.5).astype(np.uint8))


def test_labels_are_argmax_over_classes():
    probs = np.zeros((3, 2, 2), np.float32)
    probs[0, 0, 0] = probs[2, 0, 1] = probs[1, 1, 0] = probs[1, 1, 1] = 1
    np.testing.assert_array_equal(labels_from_probabilities(probs), [[0, 2], [1, 1]])


def test_mismatched_names_and_bad_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="class names"):
        save_probabilities(tmp_path / "x.npz", np.full((3, 2, 2), 1 / 3), "x", ["a", "b"])
    with pytest.raises(ValueError, match="within"):
        save_probabilities(tmp_path / "x.npz", np.full((2, 2, 2), 3.0), "x", ["a", "b"])
    assert not (tmp_path / "x.npz").exists()


def test_foreign_file_names_the_path(tmp_path):
    np.savez_compressed(tmp_path / "other.npz", image=np.zeros(3))
    with pytest.raises(DataError, match="other.npz"):
        load_probabilities(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_probabilities(tmp_path / "junk.npz")

"""The out-of-fold probability file (``medseg-probabilities/1``): round trip, binary channels, errors."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.engine.probabilities import class_channels, load_probabilities, save_probabilities
from medseg.errors import DataError


def test_round_trip_keeps_case_channels_and_values_to_float16(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=(5, 6)).transpose(2, 0, 1).astype(np.float32)  # [3, 5, 6]
    path = save_probabilities(tmp_path / "a.npz", p, case_id="case/1", channels=["bg", "a", "b"])
    back = load_probabilities(path)
    assert back.case_id == "case/1" and back.channels == ("bg", "a", "b") and back.kind == "classes"
    assert back.probabilities.dtype == np.float32 and back.probabilities.shape == p.shape
    np.testing.assert_allclose(back.probabilities, p, atol=1e-3)  # float16: ~3 significant digits
    np.testing.assert_array_equal(back.labels(), np.argmax(p.astype(np.float16), axis=0))


def test_a_binary_sigmoid_map_becomes_two_class_channels():
    p = np.array([[[0.2, 0.5, 0.9]]])  # [1, 1, 3]
    two = class_channels(p, binary=True)
    np.testing.assert_allclose(two, [[[0.8, 0.5, 0.1]], [[0.2, 0.5, 0.9]]], rtol=1e-6)
    assert np.argmax(two, axis=0).tolist() == [[0, 0, 1]]  # p = 0.5 is background, as p > 0.5 decides
    vol = np.zeros((4, 1, 2, 2))  # a volume's [D, K, H, W] -> [K, D, H, W]
    assert class_channels(vol, binary=True, channel_axis=1).shape == (2, 4, 2, 2)


def test_wrong_shapes_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="C=2"):
        save_probabilities(tmp_path / "x.npz", np.zeros((3, 4, 4)), case_id="x", channels=["a", "b"])
    np.savez(tmp_path / "foreign.npz", probabilities=np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match="foreign.npz: not a medseg probability map"):
        load_probabilities(tmp_path / "foreign.npz")
    with pytest.raises(DataError, match="missing.npz: probability map not found"):
        load_probabilities(tmp_path / "missing.npz")

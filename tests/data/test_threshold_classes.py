"""data.mask_threshold makes masks binary: it wins over the 4 labels a dataset.json names, and a
conflicting data.num_classes is refused with one clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data.build import build_data
from medseg.data.config import DataConfig
from medseg.errors import ConfigError


def _dataset(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"c{i}.png")
        mask = rng.integers(0, 256, (16, 16)).astype(np.uint8)  # JPEG-like noisy values
        Image.fromarray(mask).save(root / "masks" / f"c{i}.png")
    labels = {"0": "background", "1": "liver", "2": "kidney", "3": "spleen"}
    (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return root


def test_threshold_wins_over_dataset_json_labels(tmp_path):
    root = _dataset(tmp_path / "ds")
    bundle = build_data(DataConfig(root=root, mask_threshold=128, size=(16, 16)))
    assert bundle.num_classes == 2
    assert bundle.class_names == ["background", "foreground"]
    mask = np.asarray(Image.open(root / "masks" / "c0.png"))
    store = bundle.store
    k = [r.id for r in store.records].index("c0")
    np.testing.assert_array_equal(store.get(k).mask, (mask >= 128).astype(np.uint8))


@pytest.mark.parametrize("extra", [{"num_classes": 4}, {"class_names": ["bg", "a", "b"]}])
def test_threshold_with_more_classes_is_refused(extra, tmp_path):
    root = _dataset(tmp_path / "ds")
    with pytest.raises(ConfigError, match="mask_threshold makes the masks binary"):
        build_data(DataConfig(root=root, mask_threshold=128, size=(16, 16), **extra))

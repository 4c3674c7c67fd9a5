"""Mask value mapping (medseg.data.labels) against a plain numpy lookup."""

import numpy as np
import pytest

from medseg.data.labels import map_mask, values_present
from medseg.errors import DataError


@pytest.mark.parametrize("shape", [(7,), (64, 48), (10, 256, 216), (3, 4, 200, 5)])
def test_uint8_masks_of_any_shape_map_like_numpy_indexing(shape):
    # a slice stack 216 wide is a 3-D uint8 array whose last axis OpenCV 5 would read as
    # 216 channels (it allows 128): the lookup must not depend on that
    rng = np.random.default_rng(0)
    raw = rng.choice(np.array([0, 85, 170, 255], np.uint8), size=shape)
    mapping = {0: 0, 85: 1, 170: 2, 255: 3}
    lut = np.zeros(256, np.uint8)
    for k, v in mapping.items():
        lut[k] = v
    out = map_mask(raw, mapping, None, 4, "stack.h5")
    assert out.shape == raw.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, lut[raw])
    assert values_present(raw) == {0, 85, 170, 255}


def test_a_value_outside_the_mapping_names_the_file():
    raw = np.zeros((4, 5, 300), np.uint8)
    raw[0, 0, 0] = 7
    with pytest.raises(DataError, match=r"stack\.h5: mask values \[7\]"):
        map_mask(raw, {0: 0}, None, 2, "stack.h5")

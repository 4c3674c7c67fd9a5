"""Values shared by every layer (data, losses, metrics, engine); this module imports nothing of medseg."""

from __future__ import annotations

IGNORE_INDEX = 255
"""Target value of pixels that count nowhere: outside a region-of-interest mask (e.g. DRIVE's field
of view) or labelled "ignore" in ``data.mask_values``. Losses drop them from every sum and metrics
from every count. 255 because masks are stored as uint8 and no task here has 255 classes."""

"""BEFUnet (arXiv:2402.08793): importing this package registers ``befunet`` and ``befunet_small``."""

from medseg.models.befunet.model import BEFUNET_PRESETS, BEFUnet
from medseg.models.befunet.pdc import PixelDifferenceConv2d, reparameterize_pdc
from medseg.models.befunet.swin import load_swin_weights

__all__ = [
    "BEFUnet",
    "BEFUNET_PRESETS",
    "PixelDifferenceConv2d",
    "reparameterize_pdc",
    "load_swin_weights",
]

"""Inference: whole-image, sliding-window and overlap-tile prediction, test-time augmentation,
slice-by-slice volumes, dense-CRF post-processing."""

from medseg.inference.crf import dense_crf
from medseg.inference.sliding_window import logits_to_proba, predict_proba, predict_volume

__all__ = ["dense_crf", "logits_to_proba", "predict_proba", "predict_volume"]

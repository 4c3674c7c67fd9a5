"""BEFUnet edge-supervision loss (Manzari et al. 2024, arXiv:2402.08793, eq. 14) and total loss.

Eq. 14 is the annotator-robust, class-balanced BCE of PiDiNet (Su et al. 2021), applied to the
edge map of every encoder stage ``j``:

    l_i^j = -λ·(1-β)·log(1 - y_i^j)   if e_i = 0                 (negatives)
            0                          if 0 < e_i < η             (uncertain edge pixels)
            -β·log(y_i^j)              otherwise (e_i >= η)       (positives)

with ``e`` the edge target, ``y^j`` the sigmoid of stage ``j``'s edge logits upsampled to the
target size, ``β = |negatives| / (|negatives| + |positives|)`` counted over the batch (as in
PiDiNet) and ``λ`` (``lam``) balancing the two. The paper sums ``l`` over pixels and stages; here
the pixel sum is divided by the number of counted pixels (the stage sum is kept), so that ``γ``
does not depend on the image size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medseg.errors import ConfigError
from medseg.losses.base import SegLoss, Target
from medseg.losses.compound import resize_logits
from medseg.losses.distribution import CrossEntropyLoss
from medseg.losses.region import DiceLoss
from medseg.losses.registry import LOSSES


def befunet_edge_loss(
    edge_logits: list[Tensor] | tuple[Tensor, ...],
    edge: Tensor,
    valid: Tensor | None = None,
    *,
    eta: float = 0.3,
    lam: float = 1.1,
) -> Tensor:
    """Eq. 14 summed over stages, averaged over counted pixels.

    ``edge_logits``: list of ``[B, 1, h_j, w_j]`` logits (``[B, 1, d_j, h_j, w_j]`` in 3-D);
    ``edge``: ``[B, H, W]`` (or ``[B, 1, H, W]``, and likewise in 3-D) targets in [0, 1];
    ``valid``: optional ``[B, 1, H, W]`` mask of pixels to use.
    """
    if isinstance(edge_logits, Tensor):
        edge_logits = [edge_logits]
    if len(edge_logits) == 0:
        raise ValueError("befunet edge loss got an empty list of edge maps")
    dims = edge_logits[0].ndim  # 4 for 2-D maps [B, 1, h, w], 5 for 3-D ones
    if edge.ndim == dims - 1:
        edge = edge.unsqueeze(1)
    if edge.ndim != dims or edge.shape[1] != 1:
        raise ValueError(f"edge target must be [B, *spatial] or [B, 1, *spatial]; got {tuple(edge.shape)}")
    e = edge.float()
    pos = e >= eta
    neg = e <= 0
    if valid is not None:
        pos = pos & (valid > 0)
        neg = neg & (valid > 0)
    n_pos = pos.sum().float()
    n_neg = neg.sum().float()
    n = (n_pos + n_neg).clamp_min(1.0)
    beta = n_neg / n
    weight = pos.float() * beta + neg.float() * (lam * (1.0 - beta))
    labels = pos.float()
    size = tuple(e.shape[2:])
    total = None
    for j, z in enumerate(edge_logits):
        if z.ndim != dims or z.shape[1] != 1 or z.shape[0] != e.shape[0]:
            raise ValueError(
                f"edge map {j} must be [B, 1, *spatial] with B = {e.shape[0]}; got {tuple(z.shape)}"
            )
        zj = resize_logits(z if z.dtype == torch.float64 else z.float(), size)
        term = (
            F.binary_cross_entropy_with_logits(
                zj, labels.to(zj.dtype), weight=weight.to(zj.dtype), reduction="sum"
            )
            / n
        )
        total = term if total is None else total + term
    return total


def _edges_from(aux: dict[str, Any] | None, edge: Tensor | None, name: str) -> tuple[list[Tensor], Tensor]:
    if aux is None or "edges" not in aux:
        raise ConfigError(
            f"loss '{name}' needs aux['edges'] (stage edge maps from model.forward_aux, e.g. BEFUnet); "
            f"got {'no aux' if aux is None else 'aux keys ' + str(sorted(aux))}"
        )
    if edge is None:
        raise ConfigError(
            f"loss '{name}' needs batch['edge'] (edge targets from medseg.data.edges.edge_target in the "
            "data pipeline); the batch has none"
        )
    return list(aux["edges"]), edge


def _check_eta_lam(eta: float, lam: float) -> None:
    if not 0 < eta <= 1:
        raise ValueError(f"eta must lie in (0, 1]; got {eta}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0; got {lam}")


@LOSSES.register(
    "befunet_edge",
    paper="Manzari et al. 2024, BEFUnet, eq. 14 (after PiDiNet, Su et al. 2021)",
    summary="class-balanced BCE on each stage's edge map; pixels with 0 < e < η ignored",
    needs=("edge",),
    uses_aux=True,
)
class BEFUnetEdgeLoss(SegLoss):
    """BEFUnet edge-supervision loss (eq. 14) on ``aux["edges"]``; see the module docstring.

    Defaults ``eta=0.3`` and ``lam=1.1`` are PiDiNet's (Su et al. 2021), whose loss eq. 14 is.
    ``ignore_index`` pixels of the segmentation target are left out.
    """

    needs = ("edge",)
    uses_aux = True

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        eta: float = 0.3,
        lam: float = 1.1,
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        _check_eta_lam(eta, lam)
        self.eta = float(eta)
        self.lam = float(lam)

    def loss(
        self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None, edge: Tensor | None = None
    ) -> Tensor:
        edges, e = _edges_from(aux, edge, "befunet_edge")
        t = self.target(logits, target)
        return self.edge_term(edges, e, t)

    def edge_term(self, edges: list[Tensor], e: Tensor, t: Target) -> Tensor:
        valid = None if t.valid is None else t.valid.amax(1, keepdim=True)
        if e.shape[-2:] != t.raw.shape[-2:]:
            raise ValueError(f"edge target {tuple(e.shape)} does not match the mask {tuple(t.raw.shape)}")
        return befunet_edge_loss(edges, e.to(t.raw.device), valid, eta=self.eta, lam=self.lam)


@LOSSES.register(
    "befunet",
    paper="Manzari et al. 2024, BEFUnet, §3.3: L = λ1·L_BCE + λ2·L_Dice + γ·L_edge",
    summary="body loss (CE + Dice) plus γ·edge loss; λ1 = 0.4, λ2 = 0.6, γ = 1",
    needs=("edge",),
    uses_aux=True,
)
class BEFUnetLoss(BEFUnetEdgeLoss):
    """BEFUnet total loss (§3.3): ``L = λ1·L_CE + λ2·L_Dice + γ·L_edge``.

    ``L_CE`` is BCE-with-logits in binary/multilabel mode and softmax CE in multiclass mode
    (the paper's BCE generalised to Synapse's 9 classes); ``L_Dice`` is the standard Dice loss
    with a single factor 2 (the paper's eq. 17 prints it twice). Defaults: ``lambda1=0.4``,
    ``lambda2=0.6`` are the CE/Dice weights of the TransUNet-lineage Synapse trainer that
    BEFUnet's code builds on (the paper gives no values); ``gamma=1`` is our choice, fitting our
    per-pixel normalisation of ``L_edge``; ``eta=0.3``, ``lam=1.1`` are PiDiNet's.
    """

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        from_logits: bool = True,
        ignore_index: int | None = None,
        lambda1: float = 0.4,
        lambda2: float = 0.6,
        gamma: float = 1.0,
        eta: float = 0.3,
        lam: float = 1.1,
        smooth: float = 1.0,
        include_background: bool = True,
    ):
        super().__init__(mode=mode, from_logits=from_logits, ignore_index=ignore_index, eta=eta, lam=lam)
        self.lambda1 = float(lambda1)
        self.lambda2 = float(lambda2)
        self.gamma = float(gamma)
        self.ce = CrossEntropyLoss(mode=mode, from_logits=from_logits, ignore_index=ignore_index)
        self.dice = DiceLoss(
            mode=mode,
            from_logits=from_logits,
            ignore_index=ignore_index,
            smooth=smooth,
            include_background=include_background,
        )

    def loss(
        self, logits: Tensor, target: Tensor, aux: dict[str, Any] | None = None, edge: Tensor | None = None
    ) -> Tensor:
        edges, e = _edges_from(aux, edge, "befunet")
        t = self.target(logits, target)
        body = self.lambda1 * self.ce.from_target(logits, t) + self.lambda2 * self.dice.from_target(logits, t)
        if self.gamma == 0:
            return body
        return body + self.gamma * self.edge_term(edges, e, t)


__all__ = ["BEFUnetEdgeLoss", "BEFUnetLoss", "befunet_edge_loss"]

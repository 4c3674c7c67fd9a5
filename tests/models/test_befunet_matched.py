"""BEFUnet matched design (``design="matched"``): the official code's work
and no more. Shapes, the removed modules (by name), determinism, gradients through DLF."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import ConfigError
from medseg.models import build_model, list_models
from medseg.models.befunet.model import PIDINET_SMALL_WIDTHS, matched_edge_widths

TINY = dict(
    embed_dim=8,
    depths=(2, 2, 2, 2),
    num_heads=(1, 1, 2, 2),
    dlf_heads=(2, 2),
    decoder_channels=8,
    img_size=64,
    drop_path_rate=0.0,
)


def build(name: str = "befunet", in_channels: int = 3, num_classes: int = 2, **kw):
    """The matched design unless ``design`` says otherwise."""
    torch.manual_seed(0)
    return build_model(name, in_channels, num_classes, **{"design": "matched", **TINY, **kw})


def test_an_option_of_both_presets_and_not_a_name_of_its_own():
    assert "befunet_matched" not in list_models()
    small = build("befunet_small")
    assert small.design == "matched" and small.lcaf is None
    assert build("befunet", design="paper").design == "paper"


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (32, 160)])
def test_shapes_and_no_edge_maps(size):
    model = build(in_channels=1, num_classes=3).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        logits, aux = model.forward_aux(x)
        assert torch.equal(model(x), logits)
    assert logits.shape == (2, 3, *size) and aux == {}
    assert torch.isfinite(logits).all()


def test_matched_removes_lcaf_and_edge_heads():
    paper, matched = build(design="paper"), build()
    paper_names = {n for n, _ in paper.named_parameters()}
    names = {n for n, _ in matched.named_parameters()}
    assert any(n.startswith("lcaf.") for n in paper_names)
    assert any(n.startswith("edge.heads.") for n in paper_names)
    assert not any(n.startswith(("lcaf.", "edge.heads.")) for n in names)
    assert matched.lcaf is None and matched.edge.heads is None
    # the additive fusion: one projection per stage, edge width -> body width
    widths = matched_edge_widths(8)
    assert matched.edge.widths == widths
    for s, (e, d) in enumerate(zip(widths, matched.body.dims)):
        assert matched.edge_add[s].proj.weight.shape == (d, e)
    assert {n.split(".")[0] for n in names} == {"body", "edge", "edge_add", "dlf", "decoder"}
    # body, DLF and decoder are the paper model's, parameter for parameter
    for part in ("body", "dlf", "decoder"):
        ours = {n: p.shape for n, p in getattr(matched, part).named_parameters()}
        theirs = {n: p.shape for n, p in getattr(paper, part).named_parameters()}
        assert ours == theirs, part
    assert sum(p.numel() for p in matched.parameters()) < sum(p.numel() for p in paper.parameters())
    with pytest.raises(ValueError, match="without edge heads"):
        matched.edge.edge_logits([torch.zeros(1, w, 2, 2) for w in widths])


def test_official_edge_widths_at_full_size():
    assert matched_edge_widths(96) == PIDINET_SMALL_WIDTHS == (30, 60, 120, 120)
    assert matched_edge_widths(48) == (15, 30, 60, 60)


def test_bad_design_and_widths_are_rejected():
    with pytest.raises(ValueError, match="unknown BEFUnet design"):
        build(design="official")
    with pytest.raises(ValueError, match="4 edge widths"):
        build(edge_widths=(4, 4))
    with pytest.raises(ValueError, match="LCAF needs edge widths"):
        build(design="paper", edge_widths=(4, 8, 16, 32))


def test_deterministic_forward():
    x = torch.randn(2, 3, 64, 64)
    a, b = build().eval(), build().eval()
    with torch.no_grad():
        first = a(x)
        torch.testing.assert_close(a(x), first, rtol=0, atol=0)  # same model, twice
        torch.testing.assert_close(b(x), first, rtol=0, atol=0)  # same seed, new model


def test_every_parameter_and_the_dlf_attention_get_gradients_from_the_logits():
    """No edge loss here: every parameter must learn from the segmentation output alone,
    DLF self-attention included (the official code discards those outputs)."""
    model = build().train()
    logits = model(torch.randn(2, 3, 64, 64))
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 2, (2, 64, 64))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    for level in model.dlf.encoders:
        for block in level:
            assert block.attn.qkv.weight.grad.abs().sum() > 0
            assert block.attn.proj.weight.grad.abs().sum() > 0


def test_edge_loss_needs_the_paper_design():
    from medseg.losses import build_loss

    model = build(num_classes=1)
    logits, aux = model.forward_aux(torch.randn(1, 3, 64, 64))
    loss_fn = build_loss("befunet", mode="binary")
    with pytest.raises(ConfigError, match="aux\\['edges'\\]"):
        loss_fn(logits, torch.zeros(1, 64, 64, dtype=torch.long), aux=aux, edge=torch.zeros(1, 64, 64))

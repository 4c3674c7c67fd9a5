"""BEFUnet: shapes, gradients, PDC re-parameterisation, LCAF locality, SW-MSA mask, DLF,
LCAF complexity (eq. 10-11), Swin weight loading. Tiny widths so the file runs in seconds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from medseg.errors import CheckpointError
from medseg.models import build_model, list_models
from medseg.models.befunet.dlf import DLF, attention
from medseg.models.befunet.lcaf import LCAF, LocalCrossAttention, cross_attention_macs
from medseg.models.befunet.pdc import PDC_MODES, PixelDifferenceConv2d, reparameterize_pdc
from medseg.models.befunet.swin import (
    SwinBlock,
    SwinTransformer,
    load_swin_weights,
    window_attention,
    window_attention_mask,
)

TINY = dict(
    embed_dim=8,
    depths=(2, 2, 2, 2),
    num_heads=(1, 1, 2, 2),
    dlf_heads=(2, 2),
    decoder_channels=8,
    img_size=64,
)


def tiny_model(in_channels: int = 3, num_classes: int = 2, **kw):
    torch.manual_seed(0)
    return build_model("befunet", in_channels, num_classes, **{**TINY, **kw})


def test_registered():
    assert {"befunet", "befunet_small"} <= set(list_models())


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (32, 160), (256, 256)])
def test_shapes(size):
    model = tiny_model(in_channels=1, num_classes=3).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        logits, aux = model.forward_aux(x)
        assert torch.equal(model(x), logits)
    assert logits.shape == (2, 3, *size)
    h, w = size
    assert [tuple(e.shape) for e in aux["edges"]] == [(2, 1, h // 2**s, w // 2**s) for s in (2, 3, 4, 5)]
    assert torch.isfinite(logits).all()


def test_bad_input_is_rejected():
    model = tiny_model()
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(1, 1, 64, 64))


def test_every_parameter_gets_a_gradient():
    model = tiny_model(drop_path_rate=0.0)
    logits, aux = model.forward_aux(torch.randn(2, 3, 64, 64))
    loss = logits.square().mean() + sum(e.square().mean() for e in aux["edges"])
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} has a zero gradient"


def reference_pdc(x: torch.Tensor, w: torch.Tensor, mode: str) -> torch.Tensor:
    """Paper eq. 2 written out: sum over pixel pairs of w_i * (x_i - x_i'), per output channel
    (groups=1), on 'same'-padded 5x5 neighbourhoods."""
    b, c, h, wd = x.shape
    patches = F.unfold(F.pad(x, (2, 2, 2, 2)), 5).view(b, c, 5, 5, h, wd)  # [B, C, 5, 5, H, W]

    def px(dy, dx):
        return patches[:, :, 2 + dy, 2 + dx]

    pos = {k: (k // 3 - 1, k % 3 - 1) for k in range(9)}
    succ = {0: 1, 1: 2, 2: 5, 5: 8, 8: 7, 7: 6, 6: 3, 3: 0}
    out = torch.zeros(b, w.shape[0], h, wd)
    for k in range(9):
        dy, dx = pos[k]
        if mode == "cv":
            term = px(dy, dx)
        elif mode == "cd":
            term = px(dy, dx) - px(0, 0)
        elif mode == "ad":
            if k == 4:
                continue
            term = px(dy, dx) - px(*pos[succ[k]])
        else:  # rd
            if k == 4:
                continue
            term = px(2 * dy, 2 * dx) - px(dy, dx)
        out += torch.einsum("oc,bchw->bohw", w[:, :, k // 3, k % 3], term)
    return out


@pytest.mark.parametrize("mode", PDC_MODES)
def test_pdc_matches_eq2_and_reparameterised_conv(mode):
    torch.manual_seed(1)
    conv = PixelDifferenceConv2d(3, 4, mode)
    x = torch.randn(2, 3, 9, 11)
    y = conv(x)
    torch.testing.assert_close(y, reference_pdc(x, conv.weight.detach(), mode), atol=1e-5, rtol=1e-5)
    vanilla = conv.to_conv()
    assert type(vanilla) is torch.nn.Conv2d
    torch.testing.assert_close(vanilla(x), y, atol=1e-6, rtol=1e-6)


def test_pdc_depthwise_and_model_reparameterisation():
    torch.manual_seed(2)
    dw = PixelDifferenceConv2d(4, 4, "rd", groups=4)
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(dw.to_conv()(x), dw(x), atol=1e-6, rtol=1e-6)
    model = tiny_model().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    assert not any(isinstance(m, PixelDifferenceConv2d) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    # the free function works in place on any module tree (nested too) and returns its argument
    net = torch.nn.Sequential(
        PixelDifferenceConv2d(2, 3, "cd"),
        torch.nn.Sequential(torch.nn.ReLU(), PixelDifferenceConv2d(3, 3, "ad")),
    ).eval()
    x = torch.randn(1, 2, 8, 8)
    with torch.no_grad():
        before = net(x)
        assert reparameterize_pdc(net) is net
        after = net(x)
    assert type(net[0]) is torch.nn.Conv2d and type(net[1][1]) is torch.nn.Conv2d
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


def test_cd_ignores_constant_images():
    conv = PixelDifferenceConv2d(1, 2, "cd")
    y = conv(torch.full((1, 1, 6, 6), 3.0))
    assert y[..., 1:-1, 1:-1].abs().max() < 1e-5  # differences of a flat image vanish (away from padding)


@pytest.mark.parametrize("window", [4, 3])
def test_lcaf_locality(window):
    torch.manual_seed(3)
    block = LCAF(8, 2, window=window).eval()
    edge, body = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 8, 8)
    out = block(edge, body)
    qy, qx = 1, 2  # query token in the first window
    perturbed = body.clone()
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[:window, :window] = True
    perturbed[0, ~inside] += 10 * torch.randn(int((~inside).sum()), 8)
    out2 = block(edge, perturbed)
    torch.testing.assert_close(out2[0, qy, qx], out[0, qy, qx])
    assert not torch.allclose(out2[0, ~inside], out[0, ~inside])
    perturbed = body.clone()
    perturbed[0, 0, 0] += 10 * torch.randn(8)  # a body token inside the query's window does change it
    assert not torch.allclose(block(edge, perturbed)[0, qy, qx], out[0, qy, qx])
    # global cross-attention (eq. 10) is not local
    glob = LCAF(8, 2, window=None).eval()
    glob.load_state_dict(block.state_dict())
    perturbed = body.clone()
    perturbed[0, 7, 7] += 10 * torch.randn(8)
    assert not torch.allclose(glob(edge, perturbed)[0, qy, qx], glob(edge, body)[0, qy, qx])


@pytest.mark.parametrize("h,w,window", [(14, 14, 7), (28, 21, 7), (8, 8, 4)])
def test_lcaf_flops_match_eq10_eq11(h, w, window):
    attn = LocalCrossAttention(16, 2, window)
    glob = LocalCrossAttention(16, 2, None)
    x = torch.randn(1, h, w, 16)
    for module, win in ((attn, window), (glob, None)):
        # the math backend decomposes attention into counted matrix products
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            module(x, x)
        assert counter.get_total_flops() == 2 * cross_attention_macs(h, w, 16, win)  # 1 MAC = 2 FLOPs
    assert cross_attention_macs(h, w, 16, window) < cross_attention_macs(h, w, 16, None)


def reference_shift_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Independent SW-MSA rule: two tokens of a rolled window may attend iff their positions in
    the un-rolled map are less than a window apart on both axes (no wrap-around)."""
    rows = (torch.arange(h) + shift) % h  # original row of rolled row r
    cols = (torch.arange(w) + shift) % w
    masks = []
    for wy in range(h // ws):
        for wx in range(w // ws):
            pos = [(rows[wy * ws + i].item(), cols[wx * ws + j].item()) for i in range(ws) for j in range(ws)]
            m = torch.tensor([[abs(a[0] - b[0]) < ws and abs(a[1] - b[1]) < ws for b in pos] for a in pos])
            masks.append(m)
    return torch.stack(masks)


@pytest.mark.parametrize("h,w,ws,shift", [(4, 4, 2, 1), (6, 9, 3, 1), (8, 8, 4, 2)])
def test_shifted_window_mask(h, w, ws, shift):
    mask = window_attention_mask(h, w, ws, shift)
    torch.testing.assert_close(mask, reference_shift_mask(h, w, ws, shift))
    assert window_attention_mask(h, w, ws, 0) is None


def test_padding_mask_hides_padded_tokens():
    mask = window_attention_mask(3, 4, 2, 0)  # padded to 4 x 4: row 3 is padding
    assert mask.shape == (4, 4, 4)
    # window (1, 0) holds rows 2-3: tokens 0, 1 valid (row 2), tokens 2, 3 padded (row 3)
    assert mask[2, 0, 0] and mask[2, 0, 1] and not mask[2, 0, 2] and not mask[2, 1, 3]


def reference_window_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(d) + bias) v in float64, the bias -inf where a bool mask forbids."""
    q, k, v = (t.double() for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        bias = (
            mask.double()
            if mask.is_floating_point()
            else torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
        )
        scores = scores + bias.double()
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("kind", ["none", "bool", "bias", "bias_per_window"])
@pytest.mark.parametrize("grad", [False, True])
def test_window_attention_matches_the_formula(kind, grad):
    torch.manual_seed(7)
    b, nw, heads, n, d = 2, 3, 2, 9, 4
    q, k, v = (torch.randn(b, nw, heads, n, d, requires_grad=grad) for _ in range(3))
    allowed = torch.rand(nw, n, n) > 0.4
    allowed |= torch.eye(n, dtype=torch.bool)  # every query sees itself
    table = torch.randn(1, 1, heads, n, n, requires_grad=grad)
    mask = {
        "none": None,
        "bool": allowed[None, :, None],
        "bias": table,
        "bias_per_window": table.masked_fill(~allowed[None, :, None], float("-inf")),
    }[kind]
    with torch.set_grad_enabled(grad):
        out = window_attention(q, k, v, mask)
    expected = reference_window_attention(q, k, v, mask)
    assert out.shape == (b, nw, heads, n, d)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    if grad:
        inputs = (q, k, v) if mask is None or not mask.is_floating_point() else (q, k, v, table)
        got = torch.autograd.grad((out * expected.detach().float()).sum(), inputs, retain_graph=True)
        want = torch.autograd.grad((expected * expected.detach()).sum(), inputs)
        for g, e in zip(got, want):
            torch.testing.assert_close(g.double(), e.double(), atol=1e-5, rtol=1e-5)


def test_swin_block_shift_blocks_wrapped_tokens():
    torch.manual_seed(4)
    block = SwinBlock(8, 2, window_size=2, shifted=True).eval()
    x = torch.randn(1, 4, 4, 8)
    out = block(x)
    # with shift 1, rolled window rows {2,3} hold original rows {3,0}: row 0 and row 3 share a
    # window but are not neighbours, so changing token (0, 1) must not change token (3, 1)
    x2 = x.clone()
    x2[0, 0, 1] += 5 * torch.randn(8)
    out2 = block(x2)
    torch.testing.assert_close(out2[0, 3, 1], out[0, 3, 1])
    torch.testing.assert_close(out2[0, 3, 2], out[0, 3, 2])
    # (0, 2) is in the same shifted window and region (columns 1, 2 are rolled together)
    assert not torch.allclose(out2[0, 0, 2], out[0, 0, 2])


def test_dlf_uses_both_encoders_and_fuses_levels():
    torch.manual_seed(5)
    dlf = DLF((8, 16), ((8, 8), (2, 2)), depths=(1, 2), num_heads=(2, 2)).eval()
    ps, pl = torch.randn(1, 8, 8, 8), torch.randn(1, 2, 2, 16)
    base = dlf(ps, pl)
    for i in range(2):
        noise = torch.randn(1, 1 + (64, 4)[i], (8, 16)[i])
        handle = dlf.encoders[i].register_forward_hook(lambda m, inp, out, noise=noise: out + noise)
        changed = dlf(ps, pl)
        handle.remove()
        assert not torch.allclose(changed[0], base[0]) and not torch.allclose(changed[1], base[1]), i
    # cross-level exchange: the small level's output depends on the large level's input
    out_small, _ = dlf(ps, pl + torch.randn_like(pl))
    assert not torch.allclose(out_small, base[0])
    # other grid sizes interpolate the position embeddings
    assert dlf(torch.randn(1, 8, 12, 8), torch.randn(1, 2, 3, 16))[0].shape == (1, 8, 12, 8)


def test_dlf_attention_trains_in_fp32_under_cpu_autocast_and_infers_in_bf16():
    torch.manual_seed(6)
    q, k, v = (torch.randn(2, 3, 40, 8, requires_grad=True) for _ in range(3))
    reference = F.scaled_dot_product_attention(q, k, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = attention(q, k, v)
        with torch.no_grad():
            inferred = attention(q, k, v)
    assert trained.dtype == torch.float32 and inferred.dtype == torch.bfloat16
    torch.testing.assert_close(trained, reference)
    torch.testing.assert_close(inferred.float(), reference, atol=3e-2, rtol=3e-2)
    grads = torch.autograd.grad(trained.sum(), (q, k, v))
    expected = torch.autograd.grad(reference.sum(), (q, k, v))
    for g, e in zip(grads, expected):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, e)
    # without autocast it is plain scaled dot-product attention
    torch.testing.assert_close(attention(q, k, v), reference)


def test_edge_branch_runs_in_channels_last_memory_with_unchanged_features():
    net = tiny_model().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        edges, _ = net._encode(x)
        reference = net.edge(x)  # NCHW input: the plain layout
    assert all(e.is_contiguous(memory_format=torch.channels_last) for e in edges)
    for got, want in zip(edges, reference):
        assert not want.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_swin_stage_shapes():
    swin = SwinTransformer(3, 8, (2, 2, 2, 2), (1, 1, 2, 2), window_size=7)
    outs = swin(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, 56, 56, 8), (1, 28, 28, 16), (1, 14, 14, 32), (1, 7, 7, 64)]


def test_load_swin_weights(tmp_path):
    torch.manual_seed(6)
    src = SwinTransformer(3, 8, (2, 2, 2, 2), (1, 1, 2, 2))
    state = dict(src.state_dict())
    state["head.weight"] = torch.zeros(10, 64)
    torch.save({"model": state}, tmp_path / "official.pth")
    model = tiny_model()
    report = load_swin_weights(model.body, tmp_path / "official.pth")
    assert report["skipped"] == ["head.weight"] and report["missing"] == []
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.body.state_dict()[k], v)
    # timm >= 0.9 layout: patch merging stored at the start of the next stage
    timm_state = {}
    for k, v in src.state_dict().items():
        parts = k.split(".")
        if parts[0] == "layers" and parts[2] == "downsample":
            parts[1] = str(int(parts[1]) + 1)
        timm_state[".".join(parts)] = v
    from safetensors.torch import save_file

    save_file(timm_state, str(tmp_path / "timm.safetensors"))
    gray = tiny_model(in_channels=1)
    load_swin_weights(gray.body, tmp_path / "timm.safetensors")
    torch.testing.assert_close(
        gray.body.layers[0].downsample.reduction.weight, src.layers[0].downsample.reduction.weight
    )
    torch.testing.assert_close(
        gray.body.patch_embed.proj.weight, src.patch_embed.proj.weight.sum(1, keepdim=True)
    )
    with pytest.raises(CheckpointError, match="not found"):
        load_swin_weights(model.body, tmp_path / "missing.pth")
    torch.save({"model": {"layers.0.blocks.0.attn.qkv.weight": torch.zeros(3, 3)}}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="shape"):
        load_swin_weights(model.body, tmp_path / "bad.pth")


def test_small_variant_builds():
    model = build_model("befunet_small", 1, 4, embed_dim=8, num_heads=(1, 1, 2, 2), dlf_heads=(2, 2))
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 4, 64, 64)


def test_trains_with_the_befunet_loss_and_edge_targets():
    """The paper's loss (body + γ·edge) through forward_aux: edge heads learn from edge targets."""
    import numpy as np

    from medseg.data.edges import edge_target
    from medseg.losses import build_loss

    model = tiny_model(num_classes=1, drop_path_rate=0.0)
    loss_fn = build_loss("befunet", mode="binary")
    assert loss_fn.uses_aux and "edge" in loss_fn.needs
    mask = np.zeros((2, 64, 64), dtype=np.int64)
    mask[:, 16:40, 20:50] = 1
    edge = torch.from_numpy(np.stack([edge_target(m) for m in mask]))
    x = torch.randn(2, 3, 64, 64)
    logits, aux = model.forward_aux(x)
    loss = loss_fn(logits, torch.from_numpy(mask), aux=aux, edge=edge)
    loss.backward()
    assert torch.isfinite(loss)
    for head in model.edge.heads:
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0

"""Conv-BatchNorm folding for inference.

In eval mode a BatchNorm is an affine map per channel, so a ``Conv2d`` whose output
feeds nothing but a ``BatchNorm2d`` can absorb it: ``w' = w * g / s``,
``b' = (b - mean) * g / s + beta`` with ``s = sqrt(var + eps)``. The folded model computes
the same outputs (up to rounding) with one pass over each activation fewer.

Pairs are found structurally, never by tracing:

- consecutive children of a plain ``nn.Sequential`` (``Conv2d`` then ``BatchNorm2d``):
  ``ConvNormAct``, ``SeparableConv``, ``ConvBNReLU6``, ``InvertedResidual.conv``, the
  ResNet ``downsample``, VGG-16 with BN, decoder blocks;
- named children of modules known to compute ``bn(conv(x))`` and nothing else with
  the conv's output: ``conv1/bn1 ...`` of the ResNet stem, ``BasicBlock`` and
  ``Bottleneck`` (``_NAMED_PAIRS``).
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from medseg.models.backbones import BasicBlock, Bottleneck, ResNet

# module class -> (conv name, bn name) pairs where forward uses the conv output only as bn input
_NAMED_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    ResNet: (("conv1", "bn1"),),
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def _foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    # exact types: a subclass may override forward (e.g. a re-parameterised convolution)
    return (
        type(conv) is nn.Conv2d
        and type(bn) is nn.BatchNorm2d
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def _is_plain_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def fuse_conv_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a deep copy unless ``inplace``) in eval mode with every BatchNorm2d that
    directly follows a Conv2d folded into it and replaced by ``nn.Identity``.

    For inference only: the folded model no longer normalises by batch statistics, so do
    not train it. Other BatchNorms (and other layers) are left as they are.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        children = module._modules
        pairs: list[tuple[str, str]] = list(_NAMED_PAIRS.get(type(module), ()))
        if _is_plain_sequential(module):
            names = list(children)
            pairs += list(zip(names, names[1:]))
        for conv_name, bn_name in pairs:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if _foldable(conv, bn):
                assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                children[conv_name] = fuse_conv_bn_eval(conv, bn)
                children[bn_name] = nn.Identity()
    return model


def count_batchnorms(model: nn.Module) -> int:
    """Number of ``BatchNorm2d`` modules in ``model`` (what :func:`fuse_conv_bn` removes)."""
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


__all__ = ["fuse_conv_bn", "count_batchnorms"]

"""The all-MLP decoder computes the published concatenate-then-fuse function, folded per stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dunemap.models.decoder import SegFormerHead


def concatenate_then_fuse(head: SegFormerHead, feats: list[torch.Tensor]) -> torch.Tensor:
    """The decoder as the published layout describes it: project, upsample, concatenate, 1x1 fuse, BN, ReLU."""
    size = feats[0].shape[-2:]
    parts = [layer(f) for layer, f in zip(head.linear_layers, feats)]
    parts = [parts[0]] + [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in parts[1:]]
    return F.relu(head.batch_norm(head.linear_fuse(torch.cat(parts, dim=1))))


def test_folded_fuse_equals_concatenation_and_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    dims, dim = (8, 16, 40, 64), 32
    head = SegFormerHead(dims, dim, num_classes=5).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and biases
        head.batch_norm.running_mean.normal_()
        head.batch_norm.running_var.uniform_(0.5, 2.0)
        for layer in head.linear_layers:
            layer.linear.bias.normal_()
    # Odd sizes, as a padded window's stages have: upsampling factors are not whole numbers.
    feats = [torch.randn(2, d, 23 // 2**i + 1, 31 // 2**i + 1, requires_grad=True) for i, d in enumerate(dims)]
    folded = head.forward_features(feats)
    reference = concatenate_then_fuse(head, feats)
    torch.testing.assert_close(folded, reference, atol=1e-5, rtol=1e-5)

    weight = torch.randn_like(folded)
    inputs = [p for name, p in head.named_parameters() if not name.startswith("linear_pred")] + feats
    grads_folded = torch.autograd.grad((folded * weight).sum(), inputs)
    grads_reference = torch.autograd.grad((reference * weight).sum(), inputs)
    for a, b in zip(grads_folded, grads_reference):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)

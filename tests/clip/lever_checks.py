"""Shared checks of the text levers on a backbone: each lever setting against the plain pass."""

from __future__ import annotations

import torch


def prompted_pass(backbone, method, share: bool, buckets: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """CoOp-style method's text features and context gradient (a fixed random linear loss of the logits) with the
    shared prefix and length groups switched as given."""
    image_features = torch.randn(3, backbone.embed_dim, generator=torch.Generator().manual_seed(2))
    backbone.share_prefixes, backbone.length_buckets = share, buckets
    try:
        method.zero_grad(set_to_none=True)
        output = method(image_features=image_features)
        weights = torch.randn(output.logits.shape, generator=torch.Generator().manual_seed(1))
        (output.logits * weights).sum().backward()
    finally:
        backbone.share_prefixes, backbone.length_buckets = None, None
    return output.text_features.detach(), method.ctx.grad.clone()


def assert_levers_equal_plain_pass(backbone, method) -> None:
    """Shared prefix, length groups and both: features to 1e-5, context gradients to 1e-5 relative."""
    method.ctx.data += 0.02 * torch.randn(method.ctx.shape, generator=torch.Generator().manual_seed(1))
    plain = prompted_pass(backbone, method, False, False)
    for share, buckets in ((True, False), (False, True), (True, True)):
        features, grad = prompted_pass(backbone, method, share, buckets)
        torch.testing.assert_close(features, plain[0], rtol=0, atol=1e-5)
        assert ((grad - plain[1]).norm() / plain[1].norm()).item() <= 1e-5

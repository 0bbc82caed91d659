"""The text passes (length groups, chunks, cut last layer, shared prefix) against open_clip's own tower."""

from __future__ import annotations

import pytest
import torch

from training.text_passes import TextPasses, length_groups
from training.text_tower import TextTower

# Names of different prompt lengths, so several length groups and cut lengths are exercised.
NAMES = ["cat", "golden retriever", "a very long class name with many words", "x", "dark red sports car"]


def _whole_sequences(tower: TextTower, ctx: torch.Tensor, names: list[str]) -> torch.Tensor:
    """[R, C, D] one full sequence at a time through open_clip's transformer (no grouping, no cache)."""
    tokens = tower.class_tokens(names, ctx.shape[1])
    out = torch.zeros(ctx.shape[0], len(names), tower.clip.text_projection.shape[1])
    for r in range(ctx.shape[0]):
        for c in range(len(names)):
            seq = torch.cat([tokens.prefix[c], ctx[r], tokens.suffix[c]])[None]
            out[r, c] = tower.encode_embeddings(seq, tokens.eot[c : c + 1])[0]
    return out


@pytest.mark.parametrize("mode", ["tower", "cut", "prefix"])
@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_every_mode_equals_whole_sequences(tiny_backbone, mode, chunk):
    tower = TextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    tokens = tower.class_tokens(NAMES, 4)
    assert len(length_groups(tokens)) > 1
    ctx = torch.randn(3, 4, tiny_backbone.identity.text_width, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = _whole_sequences(tower, ctx, NAMES)
        got = TextPasses(tower, chunk, mode).features(ctx, length_groups(tokens), len(NAMES))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_prefix_mode_passes_gradients_like_the_tower(tiny_backbone):
    """Training runs the prefix-reuse pass too: its gradient w.r.t. the context must equal the plain tower's."""
    tower = TextTower(tiny_backbone.model, tiny_backbone.tokenizer)
    tokens = tower.class_tokens(NAMES, 4)
    grads = {}
    for mode in ("tower", "prefix"):
        ctx = (torch.randn(2, 4, tower.width, generator=torch.Generator().manual_seed(2)) * 0.02).requires_grad_()
        feats = TextPasses(tower, 3, mode).features(ctx, length_groups(tokens), len(NAMES))
        (feats * torch.linspace(-1, 1, feats.shape[-1])).sum().backward()
        grads[mode] = ctx.grad
    assert grads["prefix"].abs().sum() > 0
    torch.testing.assert_close(grads["prefix"], grads["tower"], atol=1e-5, rtol=1e-4)

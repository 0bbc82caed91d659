"""Text passes for many (context row, class) pairs: length groups, chunks and the shared prefix.

Used unchanged by training (PromptClassifier) and serving (app/engine): the one place the text
tower is run on learned contexts.

A prompt is [SOS] [ctx_1 .. ctx_n] [class words . EOT]. Three ways to run the text tower on
R context rows x C classes, all equal up to float rounding (checked in tests/training/test_text_passes.py):

- "tower":  TextTower.encode_embeddings on whole sequences (open_clip's own blocks).
- "cut":    a small forward over the same block weights that, in the last layer, runs
            attention queries and the MLP for the EOT token only (the only one pooled).
- "prefix": as "cut", and the causal mask is used once more: the hidden states of
            [SOS + ctx] do not depend on the class words, so the prefix runs once per context
            row and every class suffix attends to its cached keys/values.

Every mode groups classes by prompt length (each group cut to its own real length, EOT the
last token) and runs at most `chunk` sequences per pass, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from open_clip.transformer import ResidualAttentionBlock
from torch import nn
from torch.nn import functional as F

from training.text_tower import ClassTokens, TextTower

MODES = ("tower", "cut", "prefix")
PrefixKV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [R, heads, P, dh]


@dataclass(frozen=True)
class LengthGroup:
    index: torch.Tensor  # [Cg] positions of these classes in the class set
    tokens: ClassTokens  # cut to this group's prompt length; EOT is the last token


def length_groups(tokens: ClassTokens | None) -> list[LengthGroup]:
    """Split a class set by prompt length, so no sequence carries padding."""
    if tokens is None or len(tokens) == 0:
        return []
    by_eot: dict[int, list[int]] = {}
    for i, eot in enumerate(tokens.eot.tolist()):
        by_eot.setdefault(eot, []).append(i)
    device = tokens.prefix.device
    return [
        LengthGroup(torch.tensor(idx, dtype=torch.long, device=device), tokens.select(idx))
        for _, idx in sorted(by_eot.items())
    ]


def custom_forward_supported(clip: nn.Module) -> bool:
    """The custom forward reads plain open_clip blocks' weights; anything else runs whole sequences."""
    transformer = clip.transformer
    if not getattr(transformer, "batch_first", False):
        return False
    for blk in transformer.resblocks:
        if type(blk) is not ResidualAttentionBlock or hasattr(blk, "ln_1_kv"):
            return False
        if not (blk.attn.batch_first and blk.attn._qkv_same_embed_dim):
            return False
    return True


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    n, length, width = x.shape
    return x.reshape(n, length, n_heads, width // n_heads).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    n, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * dim)


def encode_prompts(
    tower: TextTower, ctx: torch.Tensor, tokens: ClassTokens, chunk: int = 4096, mode: str | None = None
) -> torch.Tensor:
    """Text features (L2-normalised) of every (context row, class): ctx [R, n_ctx, W] -> [R, C, D]."""
    return TextPasses(tower, chunk, mode).features(ctx, length_groups(tokens), len(tokens))


class TextPasses:
    """Text features for every (context row, class) pair, yielded chunk by chunk."""

    def __init__(self, tower: TextTower, chunk: int = 4096, mode: str | None = None) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1 sequence")
        supported = custom_forward_supported(tower.clip)
        if mode is None:
            mode = "prefix" if supported else "tower"
        if mode not in MODES:
            raise ValueError(f"unknown text-pass mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode != "tower" and not supported:
            raise ValueError(f"text-pass mode {mode!r} needs plain open_clip text blocks; use 'tower'")
        self.tower = tower
        self.chunk = chunk
        self.mode = mode

    def prefix_kv(self, ctx: torch.Tensor, sos: torch.Tensor) -> PrefixKV | None:
        """The [SOS + ctx] keys/values of every layer, [R, heads, P, dh] each ("prefix" mode; else None).

        They do not depend on the classes: a caller that scores fixed context rows against
        changing classes computes them once and passes them to `iter_features`.
        """
        if self.mode != "prefix" or not ctx.shape[0]:
            return None
        return self._prefix_kv(ctx, sos)

    def iter_features(
        self, ctx: torch.Tensor, groups: list[LengthGroup], kv: PrefixKV | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """ctx [R, n_ctx, W] -> (row [N], class [N], features [N, D] L2-normalised) per chunk."""
        n_rows = ctx.shape[0]
        if kv is None and groups:
            kv = self.prefix_kv(ctx, groups[0].tokens.prefix[:1])
        for group in groups:
            tokens, n_cls = group.tokens, len(group.tokens)
            total = n_rows * n_cls
            for start in range(0, total, self.chunk):
                flat = torch.arange(start, min(start + self.chunk, total), device=ctx.device)
                r, c = flat // n_cls, flat % n_cls
                if kv is not None:
                    feats = self._forward(tokens.suffix[c], kv, r)
                else:
                    seq = torch.cat([tokens.prefix[c], ctx[r], tokens.suffix[c]], dim=1)
                    if self.mode == "tower":
                        feats = self.tower.encode_embeddings(seq, tokens.eot[c])
                    else:
                        feats = self._forward(seq, None, r)
                yield r, group.index[c], feats

    def features(
        self, ctx: torch.Tensor, groups: list[LengthGroup], n_classes: int, kv: PrefixKV | None = None
    ) -> torch.Tensor:
        """All features at once: [R, C, D]."""
        out = ctx.new_zeros(ctx.shape[0], n_classes, self.tower.clip.text_projection.shape[1], dtype=torch.float32)
        for r, c, feats in self.iter_features(ctx, groups, kv):
            out[r, c] = feats
        return out

    # -- the custom forward over open_clip's block weights -------------------------------
    def _prefix_kv(self, ctx: torch.Tensor, sos: torch.Tensor) -> PrefixKV:
        """Keys/values of [SOS + ctx] in every layer, once per context row: [R, heads, P, dh] each."""
        clip = self.tower.clip
        cast = clip.transformer.get_cast_dtype()
        x = torch.cat([sos.expand(ctx.shape[0], 1, -1), ctx], dim=1).to(cast)
        length = x.shape[1]
        x = x + clip.positional_embedding[:length].to(cast)
        mask = clip.attn_mask[:length, :length]
        blocks = clip.transformer.resblocks
        kv = []
        for i, blk in enumerate(blocks):
            q, k, v = self._qkv(blk, x, last_only=False)
            kv.append((k, v))
            if i < len(blocks) - 1:  # the last layer's prefix output is never read
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
                x = self._finish(blk, x, a)
        return kv

    def _forward(self, x: torch.Tensor, kv: PrefixKV | None, rows: torch.Tensor) -> torch.Tensor:
        """Run sequences x [N, S, W] (after a cached prefix of P tokens when kv is given); pool the last token."""
        clip = self.tower.clip
        cast = clip.transformer.get_cast_dtype()
        start = 0 if kv is None else kv[0][0].shape[2]
        end = start + x.shape[1]
        x = x.to(cast) + clip.positional_embedding[start:end].to(cast)
        blocks = clip.transformer.resblocks
        for i, blk in enumerate(blocks):
            last = i == len(blocks) - 1
            q, k, v = self._qkv(blk, x, last_only=last)
            if kv is not None:
                k = torch.cat([kv[i][0][rows], k], dim=2)
                v = torch.cat([kv[i][1][rows], v], dim=2)
            mask = clip.attn_mask[end - 1 : end, :end] if last else clip.attn_mask[start:end, :end]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
            x = self._finish(blk, x[:, -1:] if last else x, a)
        x = clip.ln_final(x[:, -1]) @ clip.text_projection
        return F.normalize(x.float(), dim=-1)

    @staticmethod
    def _qkv(blk: nn.Module, x: torch.Tensor, last_only: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = blk.attn
        width, heads = x.shape[-1], attn.num_heads
        w, b = attn.in_proj_weight, attn.in_proj_bias
        h = blk.ln_1(x)
        if last_only:  # only the EOT query is needed
            q = F.linear(h[:, -1:], w[:width], None if b is None else b[:width])
            k, v = F.linear(h, w[width:], None if b is None else b[width:]).chunk(2, dim=-1)
        else:
            q, k, v = F.linear(h, w, b).chunk(3, dim=-1)
        return _heads(q, heads), _heads(k, heads), _heads(v, heads)

    @staticmethod
    def _finish(blk: nn.Module, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        out = blk.attn.out_proj
        x = x + blk.ls_1(F.linear(_merge(a), out.weight, out.bias))
        return x + blk.ls_2(blk.mlp(blk.ln_2(x)))

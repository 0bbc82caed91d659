"""The class set the engine scores against, and the cached text features of shared prompts.

For `zeroshot`, `coop` and `vpt` the prompts do not depend on the image: their text features
are computed once per (sample, class) and kept, [M, C, D]. For `vpt` the M residuals come from a
noise bank drawn once (seeded), so a request for m samples always uses the first m of them and
an answer never depends on what else is in the batch. Registering classes encodes only the new
ones; removing one drops its column. Both give exactly what a rebuild would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from app.engine.linear import Linearisation
from training.text_passes import LengthGroup, PrefixKV, TextPasses, length_groups
from training.text_tower import ClassTokens


def draw_noise(samples: int, width: int, seed: int, device: torch.device) -> torch.Tensor:
    """eps [samples, W] ~ N(0, I), drawn on the CPU so every device sees the same bank."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(samples, width, generator=gen).to(device)


@dataclass(frozen=True)
class ClassSet:
    """An immutable snapshot: a prediction reads one while class changes build the next."""

    names: tuple[str, ...] = ()
    tokens: ClassTokens | None = None  # per-image variants run these every request (shared ones: None)
    groups: list[LengthGroup] = field(default_factory=list)  # tokens split by prompt length
    # shared variants' cached features as [D, M, C], contiguous: the matmul's fast layout (kept once:
    # with many models on one backbone this cache is what each extra model costs)
    text_t: torch.Tensor | None = None
    linear: Linearisation | None = None  # vpt-cond's linearised text features (cond_mode "linear")
    linear_error: float | None = None  # the guard's max |dp| of `linear` against the exact pass
    linear_active: bool = False  # the guard passed: predictions use `linear`

    def __len__(self) -> int:
        return len(self.names)

    @property
    def text(self) -> torch.Tensor | None:
        """The cached features as [M, C, D] (a view of text_t)."""
        return None if self.text_t is None else self.text_t.permute(1, 2, 0)

    def index(self, name: str) -> int | None:
        try:
            return self.names.index(name)
        except ValueError:
            return None


class ClassCache:
    """Builds ClassSets: encodes new classes against fixed context rows (shared) or keeps tokens (per image)."""

    def __init__(self, passes: TextPasses, shared_ctx: torch.Tensor | None) -> None:
        self.passes = passes
        self.shared_ctx = shared_ctx  # [M, n_ctx, W] for shared prompts, None for per-image ones

    def encode(self, tokens: ClassTokens) -> torch.Tensor:
        """Text features [M, C, D] of the shared prompts for these classes.

        One pass per class over its M prompts, always of the same shape whatever else is being
        registered: a class's features never depend on its company, so the cache after any
        sequence of additions and removals is bitwise what a rebuild gives (batching classes
        would let the matmul kernels round differently for different batch shapes).
        """
        ctx = self.shared_ctx
        # the prompts' [SOS + ctx] part, the same for every class: computed per call, not kept (its
        # keys/values are views that hold each layer's whole qkv alive, per model)
        kv: PrefixKV | None = self.passes.prefix_kv(ctx, tokens.prefix[:1])
        first = torch.zeros(1, dtype=torch.long, device=ctx.device)
        feats = [self.passes.features(ctx, [LengthGroup(first, tokens.select([i]))], 1, kv) for i in range(len(tokens))]
        return torch.cat(feats, dim=1)

    def build(self, tokens: ClassTokens) -> ClassSet:
        if self.shared_ctx is None:
            return ClassSet(tuple(tokens.names), tokens, length_groups(tokens))
        return ClassSet(tuple(tokens.names), text_t=self.encode(tokens).permute(2, 0, 1).contiguous())

    def add(self, current: ClassSet, tokens: ClassTokens) -> ClassSet:
        if not len(current):
            return self.build(tokens)
        if self.shared_ctx is None:
            joined = ClassTokens.cat([current.tokens, tokens])
            return ClassSet(tuple(joined.names), joined, length_groups(joined))
        text_t = torch.cat([current.text_t, self.encode(tokens).permute(2, 0, 1)], dim=2)  # contiguous
        return ClassSet(current.names + tuple(tokens.names), text_t=text_t)

    def remove(self, current: ClassSet, position: int) -> ClassSet:
        keep = [i for i in range(len(current)) if i != position]
        if not keep:
            return ClassSet()
        names = tuple(current.names[i] for i in keep)
        if current.text_t is None:
            tokens = current.tokens.select(keep)
            return ClassSet(names, tokens, length_groups(tokens))
        return ClassSet(names, text_t=current.text_t[:, :, torch.tensor(keep, device=current.text_t.device)])

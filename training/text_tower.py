"""Run CLIP's text tower on input embeddings, so learned context vectors can replace words.

Running the tower on many (context, class) pairs (length groups, chunks, the shared prefix)
is training/text_passes.py's job. Sequences are cut to the longest real prompt (max EOT
index + 1): with a causal mask and EOT pooling, the padding after EOT never influences the
pooled feature, so this is exact and much cheaper than the fixed 77-token context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

CTX_PLACEHOLDER = "X"


class PromptError(ValueError):
    """A class name or template cannot be turned into a prompt."""


def prompt_text(name: str, n_ctx: int, template: str | None = None) -> str:
    """The prompt of one class: "X X X X {name}." with n_ctx learned slots, or `template` filled in (n_ctx 0)."""
    if n_ctx > 0:
        return " ".join([CTX_PLACEHOLDER] * n_ctx) + f" {name}."
    if template is None or "{}" not in template:
        raise PromptError(f"template must contain '{{}}': {template!r}")
    return template.format(name)


@dataclass
class ClassTokens:
    """Frozen token embeddings around the context slots, one row per class."""

    names: list[str]
    n_ctx: int
    prefix: torch.Tensor  # [C, 1, W]  start-of-text
    suffix: torch.Tensor  # [C, S, W]  class words, '.', EOT (cut to the longest prompt)
    eot: torch.Tensor  # [C] EOT position in the full sequence

    def __len__(self) -> int:
        return len(self.names)

    def select(self, index: list[int]) -> ClassTokens:
        idx = torch.as_tensor(index, dtype=torch.long, device=self.prefix.device)
        sub = ClassTokens([self.names[i] for i in index], self.n_ctx, self.prefix[idx], self.suffix[idx], self.eot[idx])
        return sub.trimmed()

    def trimmed(self) -> ClassTokens:
        """Drop suffix columns past the longest prompt in this set."""
        if len(self) == 0:
            return self
        keep = int(self.eot.max()) + 1 - 1 - self.n_ctx
        if keep == self.suffix.shape[1]:
            return self
        # a copy, not a view: a view would keep the whole uncut embedding alive (per model, when serving)
        return ClassTokens(self.names, self.n_ctx, self.prefix, self.suffix[:, :keep].clone(), self.eot)

    @staticmethod
    def cat(parts: list[ClassTokens]) -> ClassTokens:
        """Join class sets (e.g. when classes are registered at serving time)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise PromptError("no classes")
        width = max(p.suffix.shape[1] for p in parts)
        suffix = [nn.functional.pad(p.suffix, (0, 0, 0, width - p.suffix.shape[1])) for p in parts]
        return ClassTokens(
            [n for p in parts for n in p.names],
            parts[0].n_ctx,
            torch.cat([p.prefix for p in parts]),
            torch.cat(suffix),
            torch.cat([p.eot for p in parts]),
        ).trimmed()


class TextTower(nn.Module):
    """The frozen text half of an open_clip CLIP model, driven by embeddings."""

    def __init__(self, clip_model: nn.Module, tokenizer) -> None:
        super().__init__()
        self.clip = clip_model  # shared, frozen; not a parameter owner of ours
        self.tokenizer = tokenizer
        self.context_length = int(clip_model.context_length)

    def train(self, mode: bool = True) -> TextTower:
        """Keep the shared backbone in eval mode: a learner's .train() must not switch the image
        tower's BatchNorm (ResNet towers) to batch statistics or update its running means."""
        self.training = mode
        return self

    @property
    def width(self) -> int:
        return int(self.clip.token_embedding.weight.shape[1])

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts)
        eot = ids.argmax(dim=-1)
        too_long = [t for t, e in zip(texts, eot.tolist()) if e >= self.context_length - 1]
        if too_long:
            raise PromptError(f"prompt too long for the text context ({self.context_length} tokens): {too_long[0]!r}")
        return ids

    @torch.no_grad()
    def embed_words(self, text: str) -> torch.Tensor:
        """Token embeddings of `text` without SOS/EOT: [n_tokens, W] (to initialise context)."""
        ids = self.tokenize([text])[0]
        n = int(ids.argmax()) - 1
        emb = self.clip.token_embedding(ids.to(self.clip.token_embedding.weight.device))
        return emb[1 : 1 + n].float()

    @torch.no_grad()
    def class_tokens(self, names: list[str], n_ctx: int, template: str | None = None) -> ClassTokens:
        """Prompts "X*n_ctx {name}." (learned context) or `template` filled in (n_ctx == 0)."""
        texts = [prompt_text(n, n_ctx, template) for n in names]
        ids = self.tokenize(texts).to(self.clip.token_embedding.weight.device)
        emb = self.clip.token_embedding(ids).float()
        tokens = ClassTokens(list(names), n_ctx, emb[:, :1].clone(), emb[:, 1 + n_ctx :], ids.argmax(dim=-1))
        return tokens.trimmed()

    def encode_embeddings(self, x: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """model.encode_text, from input embeddings x [N, L, W] (L <= context length)."""
        clip = self.clip
        length = x.shape[1]
        cast = clip.transformer.get_cast_dtype()
        x = x.to(cast) + clip.positional_embedding[:length].to(cast)
        x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
        x = clip.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot] @ clip.text_projection
        return nn.functional.normalize(x.float(), dim=-1)

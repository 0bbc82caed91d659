"""Image features + prompt learner + class names -> logits for M sampled prompts.

This is the one piece of prompt code shared by training and serving; serving adds caching
and batching around it (app/engine).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.backbone import Backbone
from training.learners import LearnerConfig, PromptLearner, kl_standard_normal
from training.text_tower import ClassTokens, TextTower


@dataclass
class PromptOutput:
    logits: torch.Tensor  # [B, M, C]
    mu: torch.Tensor | None  # [G, W] posterior mean (stochastic variants)
    log_var: torch.Tensor | None  # [G, W]

    def kl(self, reduction: str = "mean") -> torch.Tensor | None:
        """KL per posterior group [G] (G = 1 for vpt, B for vpt-cond)."""
        if self.mu is None:
            return None
        return kl_standard_normal(self.mu, self.log_var, reduction)


class PromptClassifier(nn.Module):
    def __init__(self, backbone: Backbone, learner: PromptLearner, classnames: list[str], chunk: int = 4096) -> None:
        super().__init__()
        self.backbone = backbone
        self.tower = TextTower(backbone.model, backbone.tokenizer)
        self.learner = learner
        self.chunk = chunk
        self.tokens = self.tower.class_tokens(classnames, learner.cfg.prompt_ctx, learner.cfg.template)

    @classmethod
    def create(cls, backbone: Backbone, cfg: LearnerConfig, classnames: list[str]) -> PromptClassifier:
        """A fresh learner for `cfg`, context initialised from the words of cfg.ctx_init when given."""
        tower = TextTower(backbone.model, backbone.tokenizer)
        init = None
        if cfg.variant != "zeroshot" and cfg.ctx_init:
            init = tower.embed_words(cfg.ctx_init).cpu()
            if init.shape[0] != cfg.n_ctx:
                raise ValueError(
                    f"--ctx-init {cfg.ctx_init!r} is {init.shape[0]} tokens but --n-ctx is {cfg.n_ctx}; "
                    "make them agree or pass an empty --ctx-init for random context"
                )
        ident = backbone.identity
        learner = PromptLearner(cfg, ident.text_width, ident.embed_dim, init).to(backbone.device)
        return cls(backbone, learner, classnames)

    @property
    def classnames(self) -> list[str]:
        return self.tokens.names

    def set_classes(self, classnames: list[str]) -> None:
        self.tokens = self.tower.class_tokens(classnames, self.learner.cfg.prompt_ctx, self.learner.cfg.template)

    def text_features(self, ctx: torch.Tensor, tokens: ClassTokens | None = None) -> torch.Tensor:
        """ctx [G, M, n, W] -> text features [G, M, C, D]."""
        groups, samples = ctx.shape[:2]
        feats = self.tower(ctx.reshape(groups * samples, *ctx.shape[2:]), tokens or self.tokens, self.chunk)
        return feats.reshape(groups, samples, *feats.shape[1:])

    def forward(self, image_features: torch.Tensor, eps: torch.Tensor | None = None) -> PromptOutput:
        """Logits s * <f(x), t_c(r_m)> for every image, sample and class."""
        post = self.learner.posterior(image_features)
        ctx = self.learner.contexts(image_features, eps)
        text = self.text_features(ctx)
        return PromptOutput(logits_from(image_features, text, self.backbone.logit_scale), *(post or (None, None)))


def logits_from(image_features: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """image [B, D] x text [G, M, C, D] -> [B, M, C]; G is 1 (shared prompts) or B (per image).

    Always fp32, outside autocast: at a logit scale near 100, bf16 logits would be off by ~0.2."""
    image_features, text = image_features.float(), text.float()
    with torch.autocast(image_features.device.type, enabled=False):
        if text.shape[0] == 1:
            return scale * torch.einsum("bd,mcd->bmc", image_features, text[0])
        return scale * torch.einsum("bd,bmcd->bmc", image_features, text)

"""Image features + prompt learner + class names -> logits for M sampled prompts.

Training and evaluation score through this module; serving (app/engine) uses the same learner,
text passes and scorer, and adds only the class cache, the noise bank and batching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.backbone import Backbone
from training.learners import LearnerConfig, PromptLearner, create_learner, kl_standard_normal
from training.text_passes import TextPasses, length_groups
from training.text_tower import TextTower


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
    def __init__(
        self,
        backbone: Backbone,
        learner: PromptLearner,
        classnames: list[str],
        chunk: int = 4096,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tower = TextTower(backbone.model, backbone.tokenizer)
        self.passes = TextPasses(self.tower, chunk)
        self.learner = learner
        self.temperature = temperature
        self.set_classes(classnames)

    @classmethod
    def create(cls, backbone: Backbone, cfg: LearnerConfig, classnames: list[str]) -> PromptClassifier:
        """A fresh learner for `cfg` (see create_learner) scoring `classnames`."""
        return cls(backbone, create_learner(cfg, backbone), classnames)

    @property
    def classnames(self) -> list[str]:
        return self.tokens.names

    def set_classes(self, classnames: list[str]) -> None:
        self.tokens = self.tower.class_tokens(classnames, self.learner.cfg.prompt_ctx, self.learner.cfg.template)
        self.groups = length_groups(self.tokens)

    def text_features(self, ctx: torch.Tensor) -> torch.Tensor:
        """ctx [G, M, n, W] -> text features [G, M, C, D]."""
        groups, samples = ctx.shape[:2]
        rows = ctx.reshape(groups * samples, *ctx.shape[2:])
        feats = self.passes.features(rows, self.groups, len(self.tokens))
        return feats.reshape(groups, samples, *feats.shape[1:])

    def forward(self, image_features: torch.Tensor, eps: torch.Tensor | None = None) -> PromptOutput:
        """Logits (exp(s) / T) * <f(x), t_c(r_m)> for every image, sample and class."""
        post = self.learner.posterior(image_features)
        text = self.text_features(self.learner.contexts(image_features, eps))
        logits = self.backbone.scorer(self.temperature).grouped(image_features, text)
        return PromptOutput(logits, *(post or (None, None)))

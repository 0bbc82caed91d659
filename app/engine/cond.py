"""Per-image prompts (`cocoop`, `vpt-cond`): text passes for images x samples x classes per request.

`vpt-cond` draws its residuals as r_m = mu(f) + sigma(f) * eps_m with one fixed, seeded bank
eps [M_max, W] shared by every image: residuals still differ per image (mu and sigma do), but an
image's answer never depends on the rest of its batch. All (image, sample) context rows of a
batch go through the text tower together (TextPasses: length groups, shared prefix, chunks), and
each chunk is reduced to logits at once, so memory never holds [rows, C, D].
"""

from __future__ import annotations

import torch

from app.engine.bank import ClassSet
from app.engine.passes import TextPasses
from training.learners import PromptLearner


def context_rows(
    learner: PromptLearner, image_features: torch.Tensor, samples: list[int], noise: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ctx [R, n_ctx, W], image of each row [R], sample of each row [R]); R = sum(samples)."""
    device = image_features.device
    counts = torch.tensor(samples, device=device)
    image = torch.repeat_interleave(torch.arange(len(samples), device=device), counts)
    sample = torch.cat([torch.arange(m, device=device) for m in samples])
    if learner.cfg.variant == "cocoop":
        residual = learner.meta_net(image_features)[image]
    else:
        mu, log_var = learner.posterior(image_features)
        residual = mu[image] + torch.exp(0.5 * log_var)[image] * noise[sample]
    return learner.ctx[None] + residual[:, None], image, sample


def per_image_logits(
    passes: TextPasses,
    learner: PromptLearner,
    classes: ClassSet,
    image_features: torch.Tensor,
    samples: list[int],
    noise: torch.Tensor | None,
    scale: torch.Tensor,
) -> list[torch.Tensor]:
    """Logits [m_i, C] for each image i."""
    ctx, image, _ = context_rows(learner, image_features, samples, noise)
    logits = image_features.new_zeros(ctx.shape[0], len(classes), dtype=torch.float32)
    for r, c, feats in passes.iter_features(ctx, classes.groups):
        logits[r, c] = scale * (feats * image_features[image[r]]).sum(dim=-1)
    return list(logits.split(samples))

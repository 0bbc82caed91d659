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
from training.learners import PromptLearner
from training.scoring import Scorer
from training.text_passes import TextPasses


def per_image_logits(
    passes: TextPasses,
    learner: PromptLearner,
    classes: ClassSet,
    image_features: torch.Tensor,
    samples: list[int],
    noise: torch.Tensor | None,
    scorer: Scorer,
) -> list[torch.Tensor]:
    """Logits [m_i, C] for each image i: row j of image i uses noise[j] (the first m_i of the bank)."""
    device = image_features.device
    image = torch.repeat_interleave(torch.arange(len(samples), device=device), torch.tensor(samples, device=device))
    sample = torch.cat([torch.arange(m, device=device) for m in samples])
    ctx = learner.row_contexts(image_features, image, None if noise is None else noise[sample])
    logits = image_features.new_zeros(ctx.shape[0], len(classes), dtype=torch.float32)
    for r, c, feats in passes.iter_features(ctx, classes.groups):
        logits[r, c] = scorer.rows(image_features[image[r]], feats)
    return list(logits.split(samples))

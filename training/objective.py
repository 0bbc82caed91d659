"""The training objective: negative ELBO with L reparameterised samples (DESIGN 1)."""

from __future__ import annotations

import torch
from torch import nn

from training.classifier import PromptOutput
from training.learners import log_mean_exp

ESTIMATORS = ("elbo", "iwae")


def negative_elbo(
    out: PromptOutput, labels: torch.Tensor, beta: float = 0.001, estimator: str = "elbo", kl_reduction: str = "mean"
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and its parts. "elbo": mean over samples of the CE (paper); "iwae": CE of the averaged
    likelihood (official code). KL is averaged over posterior groups (1 for vpt, B for vpt-cond)."""
    log_p = nn.functional.log_softmax(out.logits.float(), dim=-1)  # [B, M, C]
    picked = log_p.gather(-1, labels[:, None, None].expand(-1, log_p.shape[1], 1)).squeeze(-1)  # [B, M]
    if estimator == "elbo":
        nll = -picked.mean(dim=1)
    elif estimator == "iwae":
        nll = -log_mean_exp(picked, dim=1)
    else:
        raise ValueError(f"unknown estimator {estimator!r}; use one of {', '.join(ESTIMATORS)}")
    loss = nll.mean()
    kl = out.kl(kl_reduction)
    parts = {"nll": float(loss.detach())}
    if kl is not None:
        kl_mean = kl.mean()
        loss = loss + beta * kl_mean
        parts["kl"] = float(kl_mean.detach())
    return loss, parts

"""Prompt learners: what is learned on top of the frozen text tower, per variant (DESIGN 1).

Every variant produces, for a batch of image features, a tensor of context vectors
ctx [G, M, n_ctx, W]: G is 1 when the prompts do not depend on the image (zeroshot, coop,
vpt) and B when they do (cocoop, vpt-cond); M is the number of Monte Carlo samples (1 for
the deterministic variants). One residual r per (image, sample) is added to every context
token, as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

VARIANTS = ("zeroshot", "coop", "cocoop", "vpt", "vpt-cond")
STOCHASTIC = ("vpt", "vpt-cond")
PER_IMAGE = ("cocoop", "vpt-cond")
DEFAULT_TEMPLATE = "a photo of a {}."
# log sigma^2 at start: sigma = e^-4.6 ~ 0.01, the scale of CLIP's token embeddings. The
# official code starts near sigma ~ 1.3, which swamps the context it perturbs.
DEFAULT_LOG_VAR_INIT = -9.2


@dataclass(frozen=True)
class LearnerConfig:
    variant: str
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    template: str = DEFAULT_TEMPLATE
    log_var_init: float = DEFAULT_LOG_VAR_INIT

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.variant != "zeroshot" and self.n_ctx < 1:
            raise ValueError("n_ctx must be at least 1 for learned prompts")

    @property
    def stochastic(self) -> bool:
        return self.variant in STOCHASTIC

    @property
    def per_image(self) -> bool:
        return self.variant in PER_IMAGE

    @property
    def prompt_ctx(self) -> int:
        """Context slots in the token sequence (0 for the hand-written template)."""
        return 0 if self.variant == "zeroshot" else self.n_ctx

    def as_dict(self) -> dict:
        return asdict(self)


def _gaussian_mlp(dim_in: int, width: int, last_bias: float) -> nn.Sequential:
    """D -> D/2 -ELU-> D/2 -ELU-> W, last layer zeroed so training starts at coop (mu=0) / sigma_init."""
    hidden = max(dim_in // 2, 1)
    net = nn.Sequential(
        nn.Linear(dim_in, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, width)
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.constant_(net[-1].bias, last_bias)
    return net


class PromptLearner(nn.Module):
    """The learned part of a prompt for one variant; owns no backbone weights."""

    def __init__(self, cfg: LearnerConfig, text_width: int, embed_dim: int, ctx_init: torch.Tensor | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_width = text_width
        if cfg.variant == "zeroshot":
            self.register_buffer("ctx", torch.zeros(0, text_width))
        else:
            if ctx_init is None:
                ctx_init = torch.randn(cfg.n_ctx, text_width) * 0.02
            if ctx_init.shape != (cfg.n_ctx, text_width):
                raise ValueError(f"ctx init has shape {tuple(ctx_init.shape)}, expected ({cfg.n_ctx}, {text_width})")
            self.ctx = nn.Parameter(ctx_init.clone().float())
        if cfg.variant == "cocoop":
            hidden = max(embed_dim // 16, 1)
            self.meta_net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, text_width))
        elif cfg.variant == "vpt":
            self.mu = nn.Parameter(torch.zeros(text_width))
            self.log_var = nn.Parameter(torch.full((text_width,), cfg.log_var_init))
        elif cfg.variant == "vpt-cond":
            self.mu_net = _gaussian_mlp(embed_dim, text_width, 0.0)
            self.log_var_net = _gaussian_mlp(embed_dim, text_width, cfg.log_var_init)

    def posterior(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mu, log_var), each [G, W]: G = 1 (vpt) or B (vpt-cond); None for deterministic variants."""
        if self.cfg.variant == "vpt":
            return self.mu[None], self.log_var[None]
        if self.cfg.variant == "vpt-cond":
            return self.mu_net(image_features), self.log_var_net(image_features)
        return None

    def sample_noise(
        self, batch: int, samples: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.Tensor | None:
        """eps [G, M, W] for the reparameterisation (None for deterministic variants)."""
        if not self.cfg.stochastic:
            return None
        groups = batch if self.cfg.per_image else 1
        device = device or self.ctx.device
        return torch.randn(groups, samples, self.text_width, generator=generator, device=device)

    def residuals(self, image_features: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor | None:
        """r [G, M, W] (None when r = 0)."""
        variant = self.cfg.variant
        if variant == "cocoop":
            return self.meta_net(image_features)[:, None]
        post = self.posterior(image_features)
        if post is None:
            return None
        if eps is None:
            raise ValueError(f"{variant} needs noise eps [G, M, W]")
        mu, log_var = post
        return mu[:, None] + torch.exp(0.5 * log_var)[:, None] * eps

    def contexts(self, image_features: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Context vectors ctx [G, M, n_ctx, W] with the residual added to every token."""
        r = self.residuals(image_features, eps)
        ctx = self.ctx[None, None]
        return ctx if r is None else ctx + r[:, :, None]


def kl_standard_normal(mu: torch.Tensor, log_var: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """KL(N(mu, diag sigma^2) || N(0, I)) per row, reduced over dims ("mean" as the official code, or "sum")."""
    kl = 0.5 * (log_var.exp() + mu.pow(2) - 1.0 - log_var)
    if reduction == "mean":
        return kl.mean(dim=-1)
    if reduction == "sum":
        return kl.sum(dim=-1)
    raise ValueError(f"unknown KL reduction {reduction!r}; use 'mean' or 'sum'")


def log_mean_exp(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])

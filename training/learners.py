"""Prompt learners: what is learned on top of the frozen text tower, one small class per variant (DESIGN 1).

Every variant produces, for a batch of image features, context vectors ctx [G, M, n_ctx, W]:
G is 1 when the prompts do not depend on the image (zeroshot, coop, vpt) and B when they do
(cocoop, vpt-cond); M is the number of Monte Carlo samples (1 for the deterministic variants).
One residual r per (image, sample) is added to every context token, as in the paper.
Serving asks for the same contexts as flat rows (`row_contexts`), one per (image, sample) it
needs; both shapes go through the same residual code. Adding a variant means one class here
and one entry in LEARNERS.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.backbone import Backbone
from training.text_tower import TextTower

DEFAULT_TEMPLATE = "a photo of a {}."
# log sigma^2 at start: sigma = e^-2.3 ~ 0.1, a few times the scale of CLIP's token embeddings, and
# learned at 100x the context's rate (FitConfig.log_var_lr_scale). The official code starts near
# sigma ~ 1.3, which swamps the context it perturbs (zero-shot accuracy on the shapes world); the
# earlier default, sigma 0.01 at the context's rate, never moved (docs/results/uncertainty.md).
DEFAULT_LOG_VAR_INIT = -4.6


@dataclass(frozen=True)
class LearnerConfig:
    variant: str
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    template: str = DEFAULT_TEMPLATE
    log_var_init: float = DEFAULT_LOG_VAR_INIT

    def __post_init__(self) -> None:
        if self.variant not in LEARNERS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.variant != "zeroshot" and self.n_ctx < 1:
            raise ValueError("n_ctx must be at least 1 for learned prompts")

    @property
    def kind(self) -> type[PromptLearner]:
        return LEARNERS[self.variant]

    @property
    def stochastic(self) -> bool:
        """Residuals are sampled: predictions average M prompts and carry MC uncertainty."""
        return self.kind.stochastic

    @property
    def per_image(self) -> bool:
        """Prompts depend on the image, so text features cannot be cached per class."""
        return self.kind.per_image

    @property
    def prompt_ctx(self) -> int:
        """Context slots in the token sequence (0 for the hand-written template)."""
        return self.kind.prompt_ctx(self)

    def as_dict(self) -> dict:
        return asdict(self)


def sigma_of(log_var: torch.Tensor) -> torch.Tensor:
    """The posterior's standard deviation from its log-variance parameterisation."""
    return torch.exp(0.5 * log_var)


def reparameterise(mu: torch.Tensor, log_var: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """r = mu + sigma * eps: the one place residuals are sampled."""
    return mu + sigma_of(log_var) * eps


class PromptLearner(nn.Module):
    """Base: a learned context (or none) and no residual. Owns no backbone weights."""

    stochastic = False
    per_image = False

    def __init__(self, cfg: LearnerConfig, text_width: int, embed_dim: int, ctx_init: torch.Tensor | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_width = text_width
        if ctx_init is None:
            ctx_init = torch.randn(cfg.n_ctx, text_width) * 0.02
        if ctx_init.shape != (cfg.n_ctx, text_width):
            raise ValueError(f"ctx init has shape {tuple(ctx_init.shape)}, expected ({cfg.n_ctx}, {text_width})")
        self.ctx = nn.Parameter(ctx_init.clone().float())

    @staticmethod
    def prompt_ctx(cfg: LearnerConfig) -> int:
        return cfg.n_ctx

    def posterior(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mu, log_var), each [G, W] in fp32; None for deterministic variants."""
        return None

    def residual_rows(
        self, image_features: torch.Tensor, image: torch.Tensor, eps: torch.Tensor | None
    ) -> torch.Tensor | None:
        """r [R, W] for rows (image[i], eps[i]); image indexes image_features (G rows). None when r = 0."""
        return None

    def sample_noise(
        self, batch: int, samples: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.Tensor | None:
        """eps [G, M, W] for the reparameterisation (None for deterministic variants)."""
        if not self.stochastic:
            return None
        groups = batch if self.per_image else 1
        return torch.randn(groups, samples, self.text_width, generator=generator, device=device or self.ctx.device)

    def row_contexts(self, image_features: torch.Tensor, image: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        """Context rows [R, n_ctx, W], one per (image index, noise row)."""
        r = self.residual_rows(image_features, image, eps)
        ctx = self.ctx[None].expand(len(image), -1, -1)
        return ctx if r is None else ctx + r[:, None]

    def contexts(self, image_features: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Context vectors ctx [G, M, n_ctx, W] with the residual added to every token."""
        groups = len(image_features) if self.per_image else 1
        samples = 1 if eps is None else eps.shape[1]
        if self.stochastic and eps is None:
            raise ValueError(f"{self.cfg.variant} needs noise eps [G, M, W]")
        device = self.ctx.device
        image = torch.arange(groups, device=device).repeat_interleave(samples)
        flat = None if eps is None else eps.reshape(groups * samples, -1)
        rows = self.row_contexts(image_features[:groups], image, flat)
        return rows.reshape(groups, samples, *rows.shape[1:])


class ZeroShot(PromptLearner):
    """The hand-written template; nothing is learned."""

    def __init__(self, cfg: LearnerConfig, text_width: int, embed_dim: int, ctx_init: torch.Tensor | None) -> None:
        nn.Module.__init__(self)
        self.cfg = cfg
        self.text_width = text_width
        self.register_buffer("ctx", torch.zeros(0, text_width))

    @staticmethod
    def prompt_ctx(cfg: LearnerConfig) -> int:
        return 0


class CoOp(PromptLearner):
    """A learned context shared by all classes and images."""


class CoCoOp(PromptLearner):
    """Context plus a deterministic image-conditioned residual pi(f): D -> D/16 -ReLU-> W."""

    per_image = True

    def __init__(self, cfg: LearnerConfig, text_width: int, embed_dim: int, ctx_init: torch.Tensor | None) -> None:
        super().__init__(cfg, text_width, embed_dim, ctx_init)
        hidden = max(embed_dim // 16, 1)
        self.meta_net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, text_width))

    def residual_rows(
        self, image_features: torch.Tensor, image: torch.Tensor, eps: torch.Tensor | None
    ) -> torch.Tensor | None:
        return self.meta_net(image_features)[image]


class Gaussian(PromptLearner):
    """q(r) = N(mu, diag sigma^2); residuals are reparameterised samples."""

    stochastic = True

    def residual_rows(
        self, image_features: torch.Tensor, image: torch.Tensor, eps: torch.Tensor | None
    ) -> torch.Tensor | None:
        if eps is None:
            raise ValueError(f"{self.cfg.variant} needs noise eps")
        mu, log_var = self.posterior(image_features)
        return reparameterise(mu[image], log_var[image], eps)


class VPT(Gaussian):
    """One global Gaussian over the residual, the same for every image."""

    def __init__(self, cfg: LearnerConfig, text_width: int, embed_dim: int, ctx_init: torch.Tensor | None) -> None:
        super().__init__(cfg, text_width, embed_dim, ctx_init)
        self.mu = nn.Parameter(torch.zeros(text_width))
        self.log_var = nn.Parameter(torch.full((text_width,), cfg.log_var_init))

    def posterior(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu[None].float(), self.log_var[None].float()


def _gaussian_mlp(dim_in: int, width: int, last_bias: float) -> nn.Sequential:
    """D -> D/2 -ELU-> D/2 -ELU-> W, last layer zeroed so training starts at coop (mu=0) / sigma_init."""
    hidden = max(dim_in // 2, 1)
    net = nn.Sequential(
        nn.Linear(dim_in, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, width)
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.constant_(net[-1].bias, last_bias)
    return net


class VPTCond(Gaussian):
    """The paper's main model: mu(f) and log sigma^2(f) from two MLPs on the image feature."""

    per_image = True

    def __init__(self, cfg: LearnerConfig, text_width: int, embed_dim: int, ctx_init: torch.Tensor | None) -> None:
        super().__init__(cfg, text_width, embed_dim, ctx_init)
        self.mu_net = _gaussian_mlp(embed_dim, text_width, 0.0)
        self.log_var_net = _gaussian_mlp(embed_dim, text_width, cfg.log_var_init)

    def posterior(self, image_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # .float(): under bf16 autocast the MLPs answer in bf16, and the KL must not be computed there.
        return self.mu_net(image_features).float(), self.log_var_net(image_features).float()


LEARNERS: dict[str, type[PromptLearner]] = {
    "zeroshot": ZeroShot,
    "coop": CoOp,
    "cocoop": CoCoOp,
    "vpt": VPT,
    "vpt-cond": VPTCond,
}
VARIANTS = tuple(LEARNERS)


def build_learner(
    cfg: LearnerConfig, text_width: int, embed_dim: int, ctx_init: torch.Tensor | None = None
) -> PromptLearner:
    """The learner of cfg.variant from explicit sizes (artifact loading knows them from the header)."""
    return cfg.kind(cfg, text_width, embed_dim, ctx_init)


def create_learner(cfg: LearnerConfig, backbone: Backbone) -> PromptLearner:
    """The one constructor of a fresh learner: context initialised from the words of cfg.ctx_init when given."""
    init = None
    if cfg.prompt_ctx and cfg.ctx_init:
        init = TextTower(backbone.model, backbone.tokenizer).embed_words(cfg.ctx_init).cpu()
        if init.shape[0] != cfg.n_ctx:
            raise ValueError(
                f"--ctx-init {cfg.ctx_init!r} is {init.shape[0]} tokens but --n-ctx is {cfg.n_ctx}; "
                "make them agree or pass an empty --ctx-init for random context"
            )
    ident = backbone.identity
    return build_learner(cfg, ident.text_width, ident.embed_dim, init).to(backbone.device)


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

"""`vpt-cond` without a text pass per image: each class's text feature linearised in the residual.

The residual r = mu(f) + sigma(f) * eps_m is added to every context token, so a class's
(L2-normalised) text feature is a smooth function t_c(r) of r [W]. Sample m of every image uses
the same bank row eps_m, so it is expanded around its own point r0_m = mu0 + sigma0 * eps_m
(mu0, sigma0: the posterior's mean and scale averaged over the probe features):

    t_c(r) ~ t_c(r0_m) + J_c (r - r0_m),    then L2-normalised again.

t_c(r0_m) [M, C, D] is exact (M text passes per class, as the vpt cache); only what the image
moves the residual away from its sample's point, (mu(f) - mu0) + (sigma(f) - sigma0) * eps_m, is
linearised, with one J_c [D, W] per class taken at mu0 by central differences through the same
text passes the exact mode runs (2 W context rows; it works in every text-pass mode). Expanding
every sample around one point instead left the whole sampling spread sigma * eps to the first
order term, which the text tower's curvature breaks for trained posteriors (sigma ~ 0.1).
A prediction is then the image encode, the posterior MLPs and one matmul [R, W] x [W, C * D].
The normalised feature is linearised because that is what TextPasses returns; renormalising
after the step keeps t on the sphere.

The approximation holds while the image-dependent move stays small next to the curvature, so
`guard_error` measures it against the exact pass on probe image features and the engine uses it
only under a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from training.learners import PromptLearner, sigma_of
from training.scoring import Scorer
from training.text_passes import LengthGroup, TextPasses

STEP = 1e-2  # central-difference step in residual units (context embeddings are ~0.02-0.1)
DIRECTIONS_PER_PASS = 32  # residual directions per text pass: bounds memory at [2 * 32, C, D]
ELEMENTS_PER_CHUNK = 1 << 24  # rows x C x D floats materialised at once when predicting


@dataclass(frozen=True)
class Linearisation:
    r0: torch.Tensor  # [M, W] the expansion point of each sample (bank row)
    base: torch.Tensor  # [M, C, D] t_c(r0_m), normalised
    jac_t: torch.Tensor  # [W, C * D] J_c stacked (at the points' centre): the matmul's layout

    @property
    def n_classes(self) -> int:
        return self.base.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.base, self.jac_t))

    def select(self, keep: list[int]) -> Linearisation:
        """Only the classes at positions `keep` (a class's rows never depend on the others)."""
        index = torch.tensor(keep, dtype=torch.long, device=self.base.device)
        width, dim = self.jac_t.shape[0], self.base.shape[2]
        jac = self.jac_t.reshape(width, -1, dim)[:, index].reshape(width, -1)
        return Linearisation(self.r0, self.base[:, index], jac.contiguous())

    def from_sample(self, offset: int) -> Linearisation:
        """The expansion for bank rows offset, offset + 1, ... (samples=auto draws the bank in blocks)."""
        return self if offset == 0 else Linearisation(self.r0[offset:], self.base[offset:], self.jac_t)

    @staticmethod
    def cat(parts: list[Linearisation]) -> Linearisation:
        width = parts[0].jac_t.shape[0]
        jac = torch.cat([p.jac_t.reshape(width, p.n_classes, -1) for p in parts], dim=1).reshape(width, -1)
        return Linearisation(parts[0].r0, torch.cat([p.base for p in parts], dim=1), jac.contiguous())


def expansion_points(learner: PromptLearner, probes: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """r0 [M, W]: mu0 + sigma0 * eps_m, with mu0, sigma0 the posterior's mean and scale averaged over the probes."""
    mu, log_var = learner.posterior(probes)
    return mu.mean(dim=0) + sigma_of(log_var).mean(dim=0) * noise


def linearise(
    passes: TextPasses, ctx: torch.Tensor, r0: torch.Tensor, groups: list[LengthGroup], n_classes: int
) -> Linearisation:
    """t_c(r0_m) and J_c for the classes in `groups`; ctx [n_ctx, W] is the learned context, r0 [M, W].

    Always in fp32: differences of bf16 features (CUDA autocast) would be rounding noise.
    """
    with torch.autocast(r0.device.type, enabled=False):
        return _linearise(passes, ctx.float(), r0.float(), groups, n_classes)


def _linearise(
    passes: TextPasses, ctx: torch.Tensor, r0: torch.Tensor, groups: list[LengthGroup], n_classes: int
) -> Linearisation:
    width = r0.shape[1]
    base = passes.features(r0[:, None] + ctx[None], groups, n_classes)  # [M, C, D]
    centre = r0.mean(dim=0)
    cols = []
    for start in range(0, width, DIRECTIONS_PER_PASS):
        k = torch.arange(start, min(start + DIRECTIONS_PER_PASS, width), device=r0.device)
        step = torch.zeros(len(k), width, device=r0.device, dtype=r0.dtype)
        step[torch.arange(len(k)), k] = STEP
        rows = torch.cat([centre + step, centre - step])[:, None] + ctx[None]  # [2k, n_ctx, W]
        feats = passes.features(rows, groups, n_classes)  # [2k, C, D]
        cols.append((feats[: len(k)] - feats[len(k) :]) / (2 * STEP))  # [k, C, D]
    jac_t = torch.cat(cols).reshape(width, -1).contiguous()
    return Linearisation(r0, base, jac_t)


def linear_logits(
    lin: Linearisation,
    learner: PromptLearner,
    image_features: torch.Tensor,
    samples: list[int],
    noise: torch.Tensor,
    scorer: Scorer,
) -> list[torch.Tensor]:
    """Logits [m_i, C] for each image i, as per_image_logits but from the linearised text features.
    noise and lin start at the same bank row (sample m of every image uses noise[m] and lin's point m)."""
    device = image_features.device
    image = torch.repeat_interleave(torch.arange(len(samples), device=device), torch.tensor(samples, device=device))
    sample = torch.cat([torch.arange(m, device=device) for m in samples])
    delta = learner.residual_rows(image_features, image, noise[sample]).float() - lin.r0[sample]  # [R, W]
    _, n_cls, dim = lin.base.shape
    logits = image_features.new_zeros(len(image), n_cls, dtype=torch.float32)
    step = max(1, ELEMENTS_PER_CHUNK // (n_cls * dim))
    with torch.autocast(device.type, enabled=False):
        for start in range(0, len(image), step):
            rows = slice(start, start + step)
            text = (delta[rows] @ lin.jac_t).reshape(-1, n_cls, dim) + lin.base[sample[rows]]  # [r, C, D]
            text = F.normalize(text, dim=-1)
            logits[rows] = scorer.grouped(image_features[image[rows]], text[:, None])[:, 0]
    return list(logits.split(samples))


def probe_features(count: int, dim: int, seed: int, device: torch.device) -> torch.Tensor:
    """Seeded unit vectors standing in for image features (drawn on the CPU: the same on every device)."""
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(count, dim, generator=gen), dim=-1).to(device)


def guard_error(
    lin: Linearisation,
    learner: PromptLearner,
    probes: torch.Tensor,
    noise: torch.Tensor,
    scorer: Scorer,
    exact: list[torch.Tensor],
) -> float:
    """max |p_linear - p_exact| over probes and classes; exact holds the exact pass's logits [M, C] per probe."""
    approx = linear_logits(lin, learner, probes, [noise.shape[0]] * len(probes), noise, scorer)
    return max((a.softmax(-1).mean(0) - e.softmax(-1).mean(0)).abs().max().item() for a, e in zip(approx, exact))

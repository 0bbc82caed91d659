"""Uncertainty a user can act on (DESIGN 4): a temperature, split-conformal prediction sets and
an "unknown" threshold, all fitted on held-out labelled images after training.

- Temperature T: minimises the NLL of the Monte Carlo mean of softmax(logits / T). It divides
  every sample's logits (training/scoring.py), so entropy and mutual information are computed on
  calibrated samples too.
- Prediction sets (split conformal): the scores of the held-out images are stored sorted, so any
  alpha can be answered later: with n scores, the threshold is the ceil((n + 1)(1 - alpha))-th
  smallest, which gives marginal coverage >= 1 - alpha for exchangeable data, for the class set
  the scores were computed on. "lac" (1 - p_true: the smallest sets, exact coverage) or "aps"
  (cumulative mass down to the true class: adapts the set size to the image, and is conservative
  in its deterministic form); docs/results/uncertainty.md compares them.
- Unknown flag: a score thresholded at the (1 - target false-alarm rate) quantile of the held-out
  known images' scores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from training.uncertainty import Predictive, summarize

CONFORMAL_METHODS = ("aps", "lac")
COMBINED = "energy+entropy"  # max of the two scores' percentile ranks among known held-out images
COMBINED_PARTS = ("energy", "entropy")
UNKNOWN_SCORES = ("max_probability", "entropy", "mutual_information", "energy", COMBINED)
DEFAULT_METHOD = "lac"
# Energy separates images of unseen classes best, entropy blank / noise inputs (whose logits are
# high for many classes at once, so their energy looks *more* known): docs/results/uncertainty.md.
DEFAULT_UNKNOWN_SCORE = COMBINED
DEFAULT_FALSE_ALARM = 0.05
_LOG_T_RANGE = (math.log(0.02), math.log(50.0))


def mc_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """NLL of mean_m softmax(logits_m / T): logits [N, M, C]."""
    probs = torch.softmax(logits.float() / temperature, dim=-1).mean(dim=1)
    return float(-probs.gather(1, labels[:, None]).clamp_min(1e-12).log().mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, tol: float = 1e-4) -> float:
    """argmin_T NLL by golden-section search on log T (the NLL is unimodal in log T in practice)."""
    if len(labels) == 0:
        raise ValueError("no held-out images to fit a temperature on")
    lo, hi = _LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = mc_nll(logits, labels, math.exp(a)), mc_nll(logits, labels, math.exp(b))
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = mc_nll(logits, labels, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = mc_nll(logits, labels, math.exp(b))
    return math.exp((lo + hi) / 2)


def _sorted_mass(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order [N, C] most probable first, cumulative mass in that order [N, C])."""
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    return order, sorted_p.cumsum(dim=-1)


def _mass_before(probs: torch.Tensor) -> torch.Tensor:
    """[N, C]: probability mass of the classes ranked above each class (0 for the most probable)."""
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = sorted_p.cumsum(dim=-1) - sorted_p
    return torch.empty_like(before).scatter_(-1, order, before)


def conformal_scores(probs: torch.Tensor, labels: torch.Tensor, method: str) -> torch.Tensor:
    """Score of the true class of each held-out image [N]: lac 1 - p_y; aps the mass down to and including y."""
    p_true = probs.gather(1, labels[:, None]).squeeze(1)
    if method == "lac":
        return 1.0 - p_true
    if method == "aps":
        return _mass_before(probs).gather(1, labels[:, None]).squeeze(1) + p_true
    raise ValueError(f"unknown conformal method {method!r}; use one of {', '.join(CONFORMAL_METHODS)}")


def prediction_sets(probs: torch.Tensor, threshold: float, method: str) -> torch.Tensor:
    """Membership [N, C] at a conformal threshold; never empty (the most probable class is always in).

    lac: every class with 1 - p_c <= threshold (exactly the classes whose score would pass).
    aps: the most probable classes until their mass reaches the threshold, the class that crosses
    it included (a superset of the passing scores: conservative, and never empty by construction).
    """
    if method == "lac":
        member = 1.0 - probs <= threshold + 1e-9
    elif method == "aps":
        member = _mass_before(probs) < threshold
    else:
        raise ValueError(f"unknown conformal method {method!r}; use one of {', '.join(CONFORMAL_METHODS)}")
    return member.scatter(-1, probs.argmax(dim=-1, keepdim=True), True)


def conformal_threshold(sorted_scores: list[float], alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score; inf (every class) when n is too small for alpha."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = len(sorted_scores)
    k = math.ceil((n + 1) * (1 - alpha))
    return math.inf if k > n else sorted_scores[k - 1]


def unknown_scores(pred: Predictive) -> dict[str, torch.Tensor]:
    """Every candidate score [N]; higher means 'less like a known class'."""
    return {
        "max_probability": 1.0 - pred.probs.max(dim=-1).values,
        "entropy": pred.entropy,
        "mutual_information": pred.mutual_information,
        "energy": pred.energy,
    }


def served_unknown_score(pred: Predictive, calibration: Calibration | None, measure: str) -> torch.Tensor:
    """The score the unknown flag thresholds [N]. COMBINED: the larger of the percentile ranks of
    energy and entropy among the known held-out images (so each part can raise the flag)."""
    scores = unknown_scores(pred)
    if measure != COMBINED:
        return scores[measure]
    if calibration is None or not calibration.reference:
        raise ValueError(f"the {COMBINED} score needs a calibration with reference scores")
    ranks = []
    for part in COMBINED_PARTS:
        ref = torch.tensor(calibration.reference[part], dtype=torch.float64)
        ranks.append(torch.searchsorted(ref, scores[part].double().contiguous(), right=True) / len(ref))
    return torch.stack(ranks).max(dim=0).values


def false_alarm_threshold(known: torch.Tensor, rate: float) -> float:
    """The score above which a fraction `rate` of known images lies (so they would be flagged)."""
    if not 0 < rate < 1:
        raise ValueError(f"false-alarm rate must be in (0, 1), got {rate}")
    return float(torch.quantile(known.double(), 1.0 - rate))


@dataclass
class Calibration:
    """What serving needs to calibrate, build prediction sets and flag unknowns; stored in the artifact."""

    temperature: float
    classnames: list[str]  # the class set the conformal scores (and unknown threshold) hold for
    method: str = DEFAULT_METHOD
    scores: list[float] = field(default_factory=list)  # sorted conformal scores of the held-out images
    unknown_score: str = DEFAULT_UNKNOWN_SCORE
    unknown_threshold: float = math.inf
    false_alarm: float = DEFAULT_FALSE_ALARM
    samples: int = 1  # Monte Carlo samples used on the held-out images
    reference: dict[str, list[float]] = field(default_factory=dict)  # sorted held-out values of COMBINED_PARTS

    def threshold(self, alpha: float) -> float:
        return conformal_threshold(self.scores, alpha)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        cal = cls(**known)
        if cal.method not in CONFORMAL_METHODS or cal.unknown_score not in UNKNOWN_SCORES:
            raise ValueError(f"calibration names an unknown method or score: {cal.method!r}, {cal.unknown_score!r}")
        if not cal.temperature > 0:
            raise ValueError(f"calibration temperature must be positive, got {cal.temperature}")
        return cal


def is_calibrated_for(calibration: Calibration | None, classnames: list[str]) -> bool:
    """The guarantee (and the unknown threshold) hold only for the class set the scores were computed on."""
    return calibration is not None and bool(calibration.scores) and set(calibration.classnames) == set(classnames)


def decision_figures(pred: Predictive, labels: torch.Tensor, calibration: Calibration, alpha: float) -> dict:
    """Empirical coverage and mean size of the sets at alpha, and the share flagged unknown."""
    member = prediction_sets(pred.probs, calibration.threshold(alpha), calibration.method)
    flagged = served_unknown_score(pred, calibration, calibration.unknown_score) > calibration.unknown_threshold
    return {
        "alpha": alpha,
        "set_coverage": float(member.gather(1, labels[:, None]).float().mean()),
        "set_size": float(member.sum(dim=1).float().mean()),
        "unknown_rate": float(flagged.float().mean()),
    }


def calibrate_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classnames: list[str],
    method: str = DEFAULT_METHOD,
    unknown_score: str = DEFAULT_UNKNOWN_SCORE,
    false_alarm: float = DEFAULT_FALSE_ALARM,
) -> Calibration:
    """Fit T, then the conformal scores and the unknown threshold on the calibrated predictions.

    logits [N, M, C] of held-out images at temperature 1 over `classnames`; labels index them.
    """
    if unknown_score not in UNKNOWN_SCORES:
        raise ValueError(f"unknown score {unknown_score!r}; use one of {', '.join(UNKNOWN_SCORES)}")
    temperature = fit_temperature(logits, labels)
    pred = summarize(logits / temperature)
    parts = unknown_scores(pred)
    cal = Calibration(
        temperature=temperature,
        classnames=list(classnames),
        method=method,
        scores=conformal_scores(pred.probs, labels, method).sort().values.tolist(),
        unknown_score=unknown_score,
        false_alarm=false_alarm,
        samples=logits.shape[1],
        reference={p: parts[p].double().sort().values.tolist() for p in COMBINED_PARTS},
    )
    cal.unknown_threshold = false_alarm_threshold(served_unknown_score(pred, cal, unknown_score), false_alarm)
    return cal

"""Write a protocol's result (base2new, few-shot, cross-dataset, domain-gen) as JSON, Markdown and PNG plots."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.base2new import harmonic_mean  # noqa: E402
from training.cli_common import write_json  # noqa: E402
from training.uncertainty_eval import DETECTION_SCORES  # noqa: E402


def _pm(stats: dict[str, float], key: str, scale: float = 100.0, digits: int = 1) -> str:
    if f"{key}_mean" not in stats:
        return "n/a"
    return f"{scale * stats[f'{key}_mean']:.{digits}f} ± {scale * stats[f'{key}_std']:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, float]]) -> str:
    """Papers' convention: HM of the mean base and mean new accuracy. ECE before -> after the temperature."""
    head = (
        "| method | base acc | new acc | HM | base ECE raw -> calibrated | new ECE raw -> calibrated | new NLL "
        "| new AUROC(H) | new AUROC(MI) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for method, s in summary.items():
        hm = harmonic_mean(s.get("base_accuracy_mean", 0.0), s.get("new_accuracy_mean", 0.0))
        rows.append(
            f"| {method} | {_pm(s, 'base_accuracy')} | {_pm(s, 'new_accuracy')} | {100 * hm:.1f} "
            f"| {_pm(s, 'base_ece_raw')} -> {_pm(s, 'base_ece')} | {_pm(s, 'new_ece_raw')} -> {_pm(s, 'new_ece')} "
            f"| {_pm(s, 'new_nll', 1, 3)} | {_pm(s, 'new_auroc_entropy', 1, 3)} "
            f"| {_pm(s, 'new_auroc_mutual_information', 1, 3)} |"
        )
    return head + "\n".join(rows) + "\n"


def uncertainty_tables(summary: dict[str, dict[str, float]], runs: list[dict[str, Any]]) -> str:
    """Calibration, prediction sets, unknown detection and the learned spread, per method."""
    sets = (
        "| method | T | set coverage (alpha 0.1) | min coverage over seeds | mean set size | top-k for the same "
        "coverage |\n|---|---|---|---|---|---|\n"
    )
    for method, s in summary.items():
        cov = [r["base_set_coverage"] for r in runs if r["method"] == method and "base_set_coverage" in r]
        topk = [r["topk_size_same_coverage"] for r in runs if r["method"] == method and "topk_size_same_coverage" in r]
        sets += (
            f"| {method} | {_pm(s, 'temperature', 1, 2)} | {_pm(s, 'base_set_coverage')} "
            f"| {100 * min(cov):.1f} | {_pm(s, 'base_set_size', 1, 2)} | {', '.join(map(str, topk))} |\n"
            if cov
            else f"| {method} | n/a | n/a | n/a | n/a | n/a |\n"
        )
    scores = DETECTION_SCORES
    det = (
        "| method | " + " | ".join(f"AUROC {n}" for n in scores) + " | false alarms (target 5%) | new images flagged "
        "| off-world flagged |\n|" + "---|" * (len(scores) + 4) + "\n"
    )
    for method, s in summary.items():
        det += (
            f"| {method} | "
            + " | ".join(_pm(s, f"auroc_unknown_{n}", 1, 3) for n in scores)
            + f" | {_pm(s, 'false_alarm')} | {_pm(s, 'unknown_detected')} | {_pm(s, 'offworld_flagged')} |\n"
        )
    off = "| method | " + " | ".join(f"AUROC {n}" for n in scores) + " |\n|" + "---|" * (len(scores) + 1) + "\n"
    for method, s in summary.items():
        off += f"| {method} | " + " | ".join(_pm(s, f"auroc_offworld_{n}", 1, 3) for n in scores) + " |\n"
    spread = "| method | sigma init | sigma learned (mean) | min | max | MI known | MI unknown |\n"
    spread += "|---|---|---|---|---|---|---|\n"
    for method, s in summary.items():
        if "sigma_mean_mean" in s:
            spread += (
                f"| {method} | {s['sigma_init_mean']:.4f} | {_pm(s, 'sigma_mean', 1, 4)} | {s['sigma_min_mean']:.4f} "
                f"| {s['sigma_max_mean']:.4f} | {_pm(s, 'mi_known', 1, 5)} | {_pm(s, 'mi_unknown', 1, 5)} |\n"
            )
    return (
        "## Prediction sets on base test images\n\n"
        + sets
        + "\n## Unknown detection: base test images (known) vs new-class test images (unknown)\n\n"
        + "Only the base classes are registered.\n\n"
        + det
        + "\n## Off-world inputs (blank, flat colours, noise) vs known images\n\n"
        + off
        + "\n## The posterior's spread\n\n"
        + spread
    )


def plot_accuracy(summary: dict[str, dict[str, float]], path: Path) -> None:
    methods = list(summary)
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for offset, key, label in ((-0.2, "base_accuracy", "base"), (0.2, "new_accuracy", "new")):
        means = [100 * summary[m].get(f"{key}_mean", 0.0) for m in methods]
        stds = [100 * summary[m].get(f"{key}_std", 0.0) for m in methods]
        ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, label=label)
    ax.set_xticks(x, methods)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("base-to-new accuracy (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _reliability_bars(ax, data: dict[str, list[float]], title: str, bins: int) -> None:
    """Accuracy per confidence bin against the diagonal, on one axis."""
    edges = np.linspace(0, 1, bins + 1)
    conf, correct = np.asarray(data["confidence"]), np.asarray(data["correct"])
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    acc = [correct[which == b].mean() if (which == b).any() else 0.0 for b in range(bins)]
    ax.bar(edges[:-1], acc, width=1 / bins, align="edge", edgecolor="black", linewidth=0.5)
    ax.plot([0, 1], [0, 1], "r--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("confidence")


def plot_calibration_reliability(curves: dict[str, Any], path: Path, bins: int = 15) -> None:
    """Reliability on base test images, before (raw) and after the temperature, one column per method."""
    methods = list(curves)
    fig, axes = plt.subplots(2, len(methods), figsize=(3 * len(methods), 6), squeeze=False)
    for col, method in enumerate(methods):
        for row, kind in enumerate(("raw", "calibrated")):
            _reliability_bars(axes[row][col], curves[method]["reliability"][kind], f"{method} ({kind})", bins)
        axes[0][col].set_ylabel("accuracy")
    fig.suptitle("reliability on base test images, before and after temperature scaling")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(
    reliability: dict[str, dict[str, list[float]]],
    path: Path,
    bins: int = 15,
    title: str = "reliability (base + new test images)",
) -> None:
    methods = list(reliability)
    fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods), 3), squeeze=False)
    for ax, method in zip(axes[0], methods):
        _reliability_bars(ax, reliability[method], method, bins)
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_coverage(curves: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    for method, c in curves.items():
        if not c["coverage"]:
            continue
        alphas = sorted(float(a) for a in c["coverage"])
        left.plot([1 - a for a in alphas], [c["coverage"][str(a)]["set_coverage"] for a in alphas], "o-", label=method)
        right.plot(alphas, [c["coverage"][str(a)]["set_size"] for a in alphas], "o-", label=method)
        right.plot(alphas, [c["coverage"][str(a)]["topk"] for a in alphas], "x:", color="grey")
    lims = [0.65, 1.0]
    left.plot(lims, lims, "k--", linewidth=1)
    left.set_xlabel("target coverage 1 - alpha")
    left.set_ylabel("empirical coverage (base test)")
    right.set_xlabel("alpha")
    right.set_ylabel("mean set size (x: top-k at the same coverage)")
    left.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(curves: dict[str, Any], path: Path) -> None:
    methods = list(curves)
    fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods), 3.2), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for name, roc in curves[method]["roc"].items():
            ax.plot(roc["fpr"], roc["tpr"], label=name)
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        ax.set_title(method)
        ax.set_xlabel("false alarms (known)")
    axes[0][0].set_ylabel("detected (new-class images)")
    axes[0][0].legend(fontsize=6)
    fig.suptitle("unknown detection ROC, base classes registered")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def uncertainty_page(result: dict[str, Any], command: str) -> str:
    """The generated part of uncertainty.md: the command, the tables and the plots."""
    return (
        f"Command: `{command}`\n\n"
        + uncertainty_tables(result["summary"], result["runs"])
        + "\nFigures in %, mean ± std over seeds (AUROC and sigma as fractions). Plots from the first seed.\n\n"
        "![reliability](reliability.png)\n\n![coverage](coverage.png)\n\n![roc](roc.png)\n"
    )


GENERATED_START, GENERATED_END = "<!-- generated by vpt-eval: start -->", "<!-- generated by vpt-eval: end -->"


def splice_generated(path: Path, title: str, body: str) -> None:
    """Write `body` between the generated-part markers of `path`, keeping what is written around them
    (docs/results/uncertainty.md is prose around the tables: rerunning the benchmark into docs/results
    refreshes the figures without deleting the text). A file without markers gets `title` and the body."""
    block = f"{GENERATED_START}\n{body}{GENERATED_END}\n"
    text = path.read_text() if path.is_file() else ""
    if GENERATED_START in text and GENERATED_END in text:
        head, rest = text.split(GENERATED_START, 1)
        text = head + block + rest.split(GENERATED_END, 1)[1].removeprefix("\n")
    else:
        text = title + block
    path.write_text(text)


def write_report(result: dict[str, Any], out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "base2new.json", {k: v for k, v in result.items() if k != "curves"} | {"command": command})
    table = markdown_table(result["summary"])
    (out / "base2new.md").write_text(
        f"# Base-to-new results\n\nCommand: `{command}`\n\n{table}\n"
        "Accuracies and ECE in %, mean ± std over seeds; HM is the harmonic mean of mean base and mean new "
        "accuracy. ECE raw -> calibrated: before and after the temperature fitted on held-out base images (the "
        "server applies it to every class, so the calibrated figures are the served ones). AUROC: how well predictive "
        "entropy (H) or mutual information (MI) flags misclassified new-class images (0.5 = no better than chance).\n\n"
        "![accuracy](accuracy.png)\n\n![reliability](reliability.png)\n"
    )
    splice_generated(out / "uncertainty.md", "# Uncertainty figures\n\n", uncertainty_page(result, command))
    plot_accuracy(result["summary"], out / "accuracy.png")
    plot_calibration_reliability(result["curves"], out / "reliability.png")
    plot_coverage(result["curves"], out / "coverage.png")
    plot_roc(result["curves"], out / "roc.png")
    return out / "base2new.md"


# --- few-shot curves ----------------------------------------------------------------------------

FEWSHOT_PANELS = (
    ("base_accuracy", "base accuracy"),
    ("new_accuracy", "new accuracy"),
    ("hm", "HM"),
    ("new_ece", "new ECE"),
)


def _fewshot_value(stats: dict[str, float], key: str) -> float:
    if key == "hm":
        return harmonic_mean(stats.get("base_accuracy_mean", 0.0), stats.get("new_accuracy_mean", 0.0))
    return stats.get(f"{key}_mean", float("nan"))


def _fewshot_methods(result: dict[str, Any]) -> list[str]:
    """Every method of any shot count, in first-seen order."""
    return list(dict.fromkeys(m for entry in result["per_shots"].values() for m in entry["summary"]))


def late_loss_drop(curve: list[float]) -> float:
    """Relative fall of the epoch loss over the last quarter of the epochs (at least one): near 0
    when training has flattened."""
    back = max(1, len(curve) // 4)
    return (curve[-1 - back] - curve[-1]) / curve[-1 - back] if len(curve) > back else float("nan")


def _late_drop_cell(runs: list[dict[str, Any]], method: str) -> str:
    drops = [late_loss_drop(r["train_loss_curve"]) for r in runs if r["method"] == method and r.get("train_loss_curve")]
    return f"{100 * statistics.fmean(drops):.1f}" if drops else "–"


def fewshot_table(result: dict[str, Any]) -> str:
    """One row per (method, shots): mean ± std over seeds, HM of the means, and how much the training
    loss still fell over the last quarter of the epochs (mean over seeds)."""
    head = (
        "| method | shots | epochs (steps) | seeds | base acc | new acc | HM | new ECE | loss drop, last 1/4 (%) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for method in _fewshot_methods(result):
        for k, entry in result["per_shots"].items():
            if method not in entry["summary"]:  # a method run at fewer shot counts
                continue
            s = entry["summary"][method]
            seeds = sum(r["method"] == method for r in entry["runs"])
            rows.append(
                f"| {method} | {k} | {entry['epochs']} ({entry['steps']}) | {seeds} | {_pm(s, 'base_accuracy')} "
                f"| {_pm(s, 'new_accuracy')} | {100 * _fewshot_value(s, 'hm'):.1f} | {_pm(s, 'new_ece')} "
                f"| {_late_drop_cell(entry['runs'], method)} |"
            )
    return head + "\n".join(rows) + "\n"


def plot_fewshot(result: dict[str, Any], path: Path) -> None:
    shots = [int(k) for k in result["per_shots"]]
    fig, axes = plt.subplots(1, len(FEWSHOT_PANELS), figsize=(3.2 * len(FEWSHOT_PANELS), 3), squeeze=False)
    for ax, (key, title) in zip(axes[0], FEWSHOT_PANELS):
        for method in _fewshot_methods(result):
            ran = [k for k in shots if method in result["per_shots"][str(k)]["summary"]]
            stats = [result["per_shots"][str(k)]["summary"][method] for k in ran]
            values = [100 * _fewshot_value(s, key) for s in stats]
            errors = [100 * s.get(f"{key}_std", 0.0) for s in stats]  # std over seeds (HM has none)
            ax.errorbar(ran, values, yerr=errors, marker="o", capsize=2, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_xlabel("shots per class")
        ax.set_title(f"{title} (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_fewshot_report(result: dict[str, Any], out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "fewshot.json", result | {"command": command})
    (out / "fewshot.md").write_text(
        f"# Few-shot results (base-to-new at each shot count)\n\nCommand: `{command}`\n\n{fewshot_table(result)}\n"
        f"Each run takes about {result['target_steps']} optimiser steps whatever the shot count (whole epochs). "
        "Accuracies and ECE in %, mean ± std over seeds; HM of the mean base and mean new accuracy.\n\n"
        "![few-shot curves](fewshot.png)\n"
    )
    plot_fewshot(result, out / "fewshot.png")
    return out / "fewshot.md"


# --- cross-dataset transfer and domain generalisation -------------------------------------------


def transfer_table(result: dict[str, Any], metric: str) -> str:
    """Methods x datasets (the source first, then the targets and their mean) for one metric."""
    cols = result["datasets"]
    head = "| method | " + " | ".join(cols) + " | target mean |\n|---|" + "---|" * (len(cols) + 1) + "\n"
    rows = []
    for method, s in result["summary"].items():
        mean = statistics.fmean(s.get(f"{t}/{metric}_mean", float("nan")) for t in result["targets"])
        cells = [_pm(s, f"{name}/{metric}") for name in cols] + [f"{100 * mean:.1f}"]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def plot_transfer(result: dict[str, Any], path: Path, title: str) -> None:
    cols, methods = result["datasets"], list(result["summary"])
    x = np.arange(len(cols))
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols) + 2), 3.5))
    for i, method in enumerate(methods):
        s = result["summary"][method]
        means = [100 * s.get(f"{c}/accuracy_mean", 0.0) for c in cols]
        stds = [100 * s.get(f"{c}/accuracy_std", 0.0) for c in cols]
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=stds, capsize=2, label=method)
    ax.set_xticks(x, cols, rotation=20)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_transfer_report(result: dict[str, Any], out: Path, command: str, protocol: str, title: str) -> Path:
    """<protocol>.json, <protocol>.md, accuracy.png and reliability.png (target images) under out."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{protocol}.json", {k: v for k, v in result.items() if k != "reliability"} | {"command": command})
    (out / f"{protocol}.md").write_text(
        f"# {title}\n\nCommand: `{command}`\n\nTrained on {result['source']}; tested unchanged on each "
        "target with the target's class names.\n\n"
        f"## Accuracy (%)\n\n{transfer_table(result, 'accuracy')}\n"
        f"## ECE (%)\n\n{transfer_table(result, 'ece')}\n"
        "Mean ± std over seeds.\n\n![accuracy](accuracy.png)\n\n![reliability](reliability.png)\n"
    )
    plot_transfer(result, out / "accuracy.png", title)
    plot_reliability(result["reliability"], out / "reliability.png", title="reliability (target test images)")
    return out / f"{protocol}.md"

"""Write a base-to-new result as JSON, a Markdown table and PNG plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.base2new import harmonic_mean  # noqa: E402
from training.cli_common import write_json  # noqa: E402


def _pm(stats: dict[str, float], key: str, scale: float = 100.0, digits: int = 1) -> str:
    if f"{key}_mean" not in stats:
        return "n/a"
    return f"{scale * stats[f'{key}_mean']:.{digits}f} ± {scale * stats[f'{key}_std']:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, float]]) -> str:
    """Papers' convention: HM of the mean base and mean new accuracy."""
    head = (
        "| method | base acc | new acc | HM | base ECE | new ECE | new NLL | new Brier "
        "| new AUROC(H) | new AUROC(MI) |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for method, s in summary.items():
        hm = harmonic_mean(s.get("base_accuracy_mean", 0.0), s.get("new_accuracy_mean", 0.0))
        rows.append(
            f"| {method} | {_pm(s, 'base_accuracy')} | {_pm(s, 'new_accuracy')} | {100 * hm:.1f} "
            f"| {_pm(s, 'base_ece')} | {_pm(s, 'new_ece')} | {_pm(s, 'new_nll', 1, 3)} | {_pm(s, 'new_brier', 1, 3)} "
            f"| {_pm(s, 'new_auroc_entropy', 1, 3)} | {_pm(s, 'new_auroc_mutual_information', 1, 3)} |"
        )
    return head + "\n".join(rows) + "\n"


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


def plot_reliability(reliability: dict[str, dict[str, list[float]]], path: Path, bins: int = 15) -> None:
    methods = list(reliability)
    fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods), 3), squeeze=False)
    edges = np.linspace(0, 1, bins + 1)
    for ax, method in zip(axes[0], methods):
        conf = np.asarray(reliability[method]["confidence"])
        correct = np.asarray(reliability[method]["correct"])
        which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
        acc = [correct[which == b].mean() if (which == b).any() else 0.0 for b in range(bins)]
        ax.bar(edges[:-1], acc, width=1 / bins, align="edge", edgecolor="black", linewidth=0.5)
        ax.plot([0, 1], [0, 1], "r--", linewidth=1)
        ax.set_title(method)
        ax.set_xlabel("confidence")
    axes[0][0].set_ylabel("accuracy")
    fig.suptitle("reliability (base + new test images)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(result: dict[str, Any], out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "base2new.json", {k: v for k, v in result.items() if k != "reliability"} | {"command": command})
    table = markdown_table(result["summary"])
    (out / "base2new.md").write_text(
        f"# Base-to-new results\n\nCommand: `{command}`\n\n{table}\n"
        "Accuracies and ECE in %, mean ± std over seeds; HM is the harmonic mean of mean base and mean new "
        "accuracy. AUROC: how well predictive entropy (H) or mutual information (MI) flags misclassified "
        "new-class images (0.5 = no better than chance).\n\n"
        "![accuracy](accuracy.png)\n\n![reliability](reliability.png)\n"
    )
    plot_accuracy(result["summary"], out / "accuracy.png")
    plot_reliability(result["reliability"], out / "reliability.png")
    return out / "base2new.md"

"""The markdown tables of `gemma_baselines.py` results (docs/RESULTS.md).

    python experiments/gemma_table.py docs/results/gemma-baselines.json

First a summary (F1 / ROUGE-L, one row per dataset, one column per method), then
every cell with all metrics and its wall time.
"""

from __future__ import annotations

import json
import sys

from gemma_baselines import DATASETS

METRICS = [("exact_match", "EM"), ("f1", "F1"), ("rougeL", "ROUGE-L"), ("bleu", "BLEU"),
           ("meteor", "METEOR"), ("recall@5", "R@5")]


def summary(cells: dict) -> list[str]:
    methods = sorted({k.split("/", 1)[1] for k in cells},
                     key=lambda m: ("@" in m, not m.startswith("zero_shot"), m))
    lines = ["| dataset | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for dataset in DATASETS:
        row = []
        for method in methods:
            cell = cells.get(f"{dataset}/{method}")
            row.append("–" if cell is None else
                       f"{cell['metrics']['f1']:.1f} / {cell['metrics']['rougeL']:.1f}")
        lines.append(f"| {dataset} | " + " | ".join(row) + " |")
    return lines


def full(cells: dict) -> list[str]:
    lines = ["| dataset | method | n | " + " | ".join(m for _, m in METRICS) + " | wall |",
             "|---|---|---:|" + "---:|" * len(METRICS) + "---:|"]
    for key in sorted(cells, key=lambda k: (DATASETS.index(k.split("/")[0]),
                                            "@" in k, "zero_shot" not in k, k)):
        dataset, method = key.split("/", 1)
        cell = cells[key]
        values = [cell["metrics"].get(m) for m, _ in METRICS]
        shown = " | ".join("–" if v is None else f"{v:.1f}" for v in values)
        lines.append(f"| {dataset} | {method} | {cell['n']} | {shown} | "
                     f"{cell['wall_seconds']:.0f} s |")
    return lines


def main(path: str) -> None:
    cells = json.loads(open(path, encoding="utf-8").read())["cells"]
    print("F1 / ROUGE-L:\n")
    print("\n".join(summary(cells)))
    print("\nAll metrics:\n")
    print("\n".join(full(cells)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/gemma-baselines.json")

"""The markdown table of `gemma_baselines.py` results (docs/RESULTS.md), one row per cell.

    python experiments/gemma_table.py docs/results/gemma-baselines.json
"""

from __future__ import annotations

import json
import sys

from gemma_baselines import DATASETS

METRICS = [("exact_match", "EM"), ("f1", "F1"), ("rougeL", "ROUGE-L"), ("bleu", "BLEU"),
           ("meteor", "METEOR"), ("recall@5", "R@5")]


def main(path: str) -> None:
    cells = json.loads(open(path, encoding="utf-8").read())["cells"]
    print("| dataset | method | n | " + " | ".join(m for _, m in METRICS) + " | wall |")
    print("|---|---|---:|" + "---:|" * len(METRICS) + "---:|")
    for key in sorted(cells, key=lambda k: (DATASETS.index(k.split("/")[0]), k)):
        dataset, method = key.split("/", 1)
        cell = cells[key]
        values = [cell["metrics"].get(m) for m, _ in METRICS]
        shown = " | ".join("–" if v is None else f"{v:.1f}" for v in values)
        print(f"| {dataset} | {method} | {cell['n']} | {shown} | {cell['wall_seconds']:.0f} s |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/results/gemma-baselines.json")

"""Gemma 3 270M untrained on the 8 shared datasets: zero-shot and in-context k-shot.

For each dataset's test split (the first N questions, a fixed random subset), the
default model (Gemma 3 270M generator, MiniLM retriever; BM25 over characters for
Chinese) answers from its top retrieved passage, with no demos and with the first
K train examples as demos. Every metric of `metarag evaluate` is kept; each
(dataset, method) cell is written to OUT as soon as it is done, and a re-run skips
the cells already there, so a killed run resumes.

    python experiments/gemma_baselines.py --data ../shared/data \\
        --out docs/results/gemma-baselines.json \\
        --max-examples 24 --in-context 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

DATASETS = ["xquad", "covid_qa", "pubmedqa", "medquad", "tatqa", "policyqa", "cmrc2018", "agxqa"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--out", default="docs/results/gemma-baselines.json")
    parser.add_argument("--max-examples", type=int, default=24)
    parser.add_argument("--in-context", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-source-length", type=int, default=1024)
    parser.add_argument("--cache-dir", default="runs/cache")
    parser.add_argument("--checkpoint", default=None,
                        help="A trained checkpoint to score instead of the untrained model")
    parser.add_argument("--name", default=None,
                        help="With --checkpoint: its cells are named '<method>@NAME' "
                        "(default: the checkpoint folder's name)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from metarag.data.loaders import load_task
    from metarag.evaluation.qa import evaluate_qa
    from metarag.rag.build import ModelConfig, build_model, load_trained
    from metarag.rag.model import RAGConfig

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"cells": {}}
    results["settings"] = {**vars(args), "torch_threads": args.threads}
    started = time.perf_counter()
    if args.checkpoint:
        built, _ = load_trained(args.checkpoint)
        # The same prompt budget as the untrained rows, whatever the training used.
        built.model.generator.max_source_length = args.max_source_length
    else:
        config = ModelConfig(max_source_length=args.max_source_length,
                             rag=RAGConfig(k=1, decoding="fast", max_new_tokens=32))
        built = build_model(config)
        built.model.eval()
    built.cache_dir = args.cache_dir
    load_seconds = time.perf_counter() - started
    suffix = f"@{args.name or Path(args.checkpoint).name}" if args.checkpoint else ""
    for name in args.datasets:
        methods = {f"zero_shot{suffix}": 0,
                   f"in_context_{args.in_context}{suffix}": args.in_context}
        todo = {m: k for m, k in methods.items() if f"{name}/{m}" not in results["cells"]}
        if not todo:
            continue
        task = load_task(os.path.join(args.data, name))
        # MiniLM reads English only: Chinese retrieval is BM25 over characters.
        built.model.config.retriever = "bm25" if task.language == "zh" else "dense"
        for method, k in todo.items():
            t0 = time.perf_counter()
            result = evaluate_qa(built, task, max_examples=args.max_examples,
                                 batch_size=args.batch_size, ks=(1, 5), in_context=k,
                                 show_progress=True)
            cell = result.to_dict()
            cell.pop("predictions", None)
            cell["wall_seconds"] = time.perf_counter() - t0
            cell["retriever"] = built.model.config.retriever
            cell["examples"] = [{"question": p.question, "answer": p.prediction,
                                 "references": p.references} for p in result.predictions[:5]]
            results["cells"][f"{name}/{method}"] = cell
            results["load_seconds"] = load_seconds
            tmp = out.with_suffix(".tmp")
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
            tmp.replace(out)
            m = cell["metrics"]
            logging.info("%s %s: F1 %.1f EM %.1f ROUGE-L %.1f R@5 %s (%.0f s)", name, method,
                         m["f1"], m["exact_match"], m["rougeL"], m.get("recall@5"),
                         cell["wall_seconds"])


if __name__ == "__main__":
    main()

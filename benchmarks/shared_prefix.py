"""In-context answering with the shared demo prefix run once, against every row run whole.

Run from the repository root (the figures in docs/BENCHMARKS.md):

    python benchmarks/shared_prefix.py --out docs/benchmarks/shared_prefix.json

The prompts are those of an in-context benchmark cell (`metarag benchmark`,
``in_context`` at 16 shots) on Gemma 3 270M: agxqa test questions, each with its
top BM25 passage, after the 16-shot support set of seed 0 as demos (each with its
gold passage cut to 128 tokens; as many as fit 1,024 prompt tokens), greedy, at most
32 new tokens, batches of ``--batch-size``. Two engines answer the same prompts,
interleaved ``--repeats`` times (median reported):

- ``whole_rows``: ``Generator.generate`` with ``share_prefix = False``: every row's
  prompt prefilled whole (the reference);
- ``shared_prefix``: ``share_prefix = True`` (`metarag.generation.shared_prefix`):
  the demo block every row starts with prefilled once per batch.

Reported: seconds, the ratio to the reference from the same run, token F1 against
the gold answers and how many answers equal the reference's (float rounding of
other matrix shapes may flip a near-tie in greedy decoding).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("METARAG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def prompts(n: int, shots: int, seed: int) -> tuple[list, list[list[str]]]:
    """(sources, gold answers): ``n`` agxqa test questions after ``shots`` demos."""
    from metarag.benchmark import _support
    from metarag.data.loaders import load_task
    from metarag.generation.prompt import Demo, make_source, passage_as_context
    from metarag.retrieval import BM25Index

    task = load_task(DATA / "agxqa")
    by_id = task.passage_lookup()
    support = _support(task, shots, seed)  # the benchmark cell's (agxqa, shots, seed)
    demos = [Demo(" ".join(e.question.split()), e.answers[0],
                  next((passage_as_context(by_id[g]) for g in e.gold_passage_ids
                        if g in by_id), "")) for e in support]
    examples = task.test[:n]
    hits = BM25Index.build(task.corpus).search([e.question for e in examples], k=1)
    sources = [make_source(e.question, [by_id[i] for i in ids], demos)
               for e, ids in zip(examples, hits.ids)]
    return sources, [list(e.answers) for e in examples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if not (DATA / "agxqa").is_dir():
        sys.exit(f"agxqa not found under {DATA}; set METARAG_SHARED_DATA")

    import torch
    from answer_throughput import time_interleaved  # (this folder: sys.path[0])

    from metarag.evaluation.metrics import token_f1_scores
    from metarag.generation import Generator
    from metarag.generation.precision import cpu_name
    from metarag.generation.shared_prefix import common_prefix_length

    torch.set_num_threads(args.threads)
    sources, gold = prompts(args.questions, args.shots, args.seed)
    generator = Generator.from_pretrained("causal", max_source_length=1024)
    generator.set_precision(args.precision)
    batches = [generator.tokenize(sources[i:i + args.batch_size])
               for i in range(0, len(sources), args.batch_size)]
    lengths = [int(n) for b in batches for n in b["attention_mask"].sum(1)]
    shared = [common_prefix_length(b["input_ids"], b["attention_mask"]) for b in batches]

    def engine(share: bool):
        def run(chunk: list) -> list[str]:
            generator.share_prefix = share
            return generator.generate(chunk, max_new_tokens=args.max_new_tokens,
                                      batch_size=args.batch_size)
        return run

    engines = {"whole_rows": engine(False), "shared_prefix": engine(True)}
    times, answers = time_interleaved(engines, sources, args.repeats)

    reference = statistics.median(times["whole_rows"])
    rows = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        rows[name] = {"seconds": median, "seconds_all": ts, "speedup": reference / median,
                      "f1": 100 * statistics.mean(token_f1_scores(answers[name], gold)),
                      "same_answers": sum(a.strip() == b.strip() for a, b in
                                          zip(answers[name], answers["whole_rows"]))}
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(),
                    "torch_threads": args.threads, "torch": torch.__version__,
                    "python": platform.python_version(), "load_avg": os.getloadavg(),
                    "compute_dtype": str(generator.compute_dtype)},
        "prompts": {"n": len(sources), "demos_offered": args.shots,
                    "tokens_mean": statistics.mean(lengths), "tokens_max": max(lengths),
                    "shared_tokens_per_batch": shared, "batch_size": args.batch_size,
                    "max_new_tokens": args.max_new_tokens},
        "reference": "whole_rows",
        "engines": rows,
    }
    print(f"{len(sources)} agxqa prompts after {args.shots} offered demos, "
          f"{statistics.mean(lengths):.0f} tokens on average, {shared} shared per batch; "
          f"{args.threads} threads, {generator.compute_dtype}")
    print(f"{'engine':<16}{'seconds':>9}{'vs ref':>9}{'F1':>7}{'same':>8}")
    for name, row in rows.items():
        print(f"{name:<16}{row['seconds']:>9.1f}{row['speedup']:>8.2f}x{row['f1']:>7.1f}"
              f"{row['same_answers']:>5}/{len(sources)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()

"""Answers per second on the default generator: batched (what `evaluate` runs) vs one at a time.

Run from the repository root (the figures in docs/BENCHMARKS.md):

    python benchmarks/answer_throughput.py --out docs/benchmarks/answer_throughput.json

The prompts are what `metarag evaluate` gives Gemma 3 270M with fast decoding:
``--questions`` agxqa test questions, each with its top BM25 passage (``Context:
... Question: ... Answer:``, about 200 tokens), greedy, at most ``--max-new-tokens``
new tokens, stopping at EOS or the line end. Each engine answers the same prompts:

- ``one_at_a_time``: ``Generator.generate([prompt])`` per prompt (HF ``generate``,
  KV cache): the reference;
- ``batched_B``: ``Generator.generate(prompts, batch_size=B)``: left-padded batches
  with the KV cache, one ``generate`` call per batch, what `RAGModel.answer` runs.

Every engine runs ``--repeats`` times in turn (interleaved, so load drift hits all
alike) after a warm-up; the median time is reported, with the ratio to
``one_at_a_time`` from the same run, and how many answers equal the reference's
(batching changes padding, hence float sums: an answer may differ in a token).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("METARAG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def prompts(n: int) -> list:
    from metarag.data.loaders import load_task
    from metarag.generation.prompt import make_source
    from metarag.retrieval import BM25Index

    task = load_task(DATA / "agxqa")
    questions = [e.question for e in task.test[:n]]
    by_id = task.passage_lookup()
    hits = BM25Index.build(task.corpus).search(questions, k=1)
    return [make_source(q, [by_id[i] for i in ids]) for q, ids in zip(questions, hits.ids)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 24])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if not (DATA / "agxqa").is_dir():
        sys.exit(f"agxqa not found under {DATA}; set METARAG_SHARED_DATA")

    import torch

    from metarag.generation import Generator

    torch.set_num_threads(args.threads)
    sources = prompts(args.questions)
    load_started = time.perf_counter()
    generator = Generator.from_pretrained("causal", max_source_length=384)
    load_s = time.perf_counter() - load_started
    lengths = [generator.tokenize([s])["input_ids"].shape[1] for s in sources]

    def one_at_a_time() -> list[str]:
        return [generator.generate([s], max_new_tokens=args.max_new_tokens)[0] for s in sources]

    engines = {"one_at_a_time": one_at_a_time}
    for b in args.batch_sizes:
        engines[f"batched_{b}"] = (lambda b=b: generator.generate(
            sources, max_new_tokens=args.max_new_tokens, batch_size=b))
    answers = {name: fn() for name, fn in engines.items()}  # warm-up, and the answers
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, fn in engines.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)

    reference = statistics.median(times["one_at_a_time"])
    rows = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        rows[name] = {"seconds": median, "seconds_all": ts,
                      "answers_per_s": len(sources) / median, "speedup": reference / median,
                      "same_answers": sum(a == b for a, b in
                                          zip(answers[name], answers["one_at_a_time"]))}
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_avg": os.getloadavg()},
        "model": {"generator": generator.base_identity, "dtype": "float32",
                  "load_seconds": load_s},
        "prompts": {"n": len(sources), "tokens_mean": statistics.mean(lengths),
                    "tokens_max": max(lengths), "max_new_tokens": args.max_new_tokens},
        "engines": rows,
        "examples": [{"question": s.question, "answer": a}
                     for s, a in zip(sources[:3], answers["one_at_a_time"])],
    }
    print(f"{len(sources)} agxqa prompts, {statistics.mean(lengths):.0f} tokens on average, "
          f"<= {args.max_new_tokens} new tokens, {args.threads} threads")
    print(f"{'engine':<16}{'seconds':>9}{'answers/s':>11}{'vs one at a time':>18}{'same':>7}")
    for name, row in rows.items():
        print(f"{name:<16}{row['seconds']:>9.1f}{row['answers_per_s']:>11.2f}"
              f"{row['speedup']:>17.2f}x{row['same_answers']:>4}/{len(sources)}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()

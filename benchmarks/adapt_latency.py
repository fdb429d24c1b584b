"""Adaptation latency: a new domain, 16 shots, default steps, a 1,000-passage corpus.

Run from the repository root (the figures in docs/BENCHMARKS.md):

    python benchmarks/adapt_latency.py --out docs/benchmarks/adapt_latency.json

What is timed, on the default model (`ModelConfig()`: MiniLM retriever, Gemma 3 270M
generator with LoRA, "auto" precision) and the default adaptation (`AdaptConfig()`);
``--k``, ``--params``/``--exclude`` and ``--precision`` change those settings:

1. ``metarag.meta.adapt(built, support, corpus)`` end to end, from a cold start:
   copying the model, embedding and indexing the new domain's corpus (no
   embedding cache), and the SGD steps on the 16 support examples. The domain is
   a synthetic-suite domain generated with ``--passages`` entities, one passage
   each, so the corpus has exactly that many passages.
2. The same adaptation with the corpus already embedded, with and without the
   forward cache of `metarag.meta.rag_loss_fn` (``cache_size=0`` patched in for
   the second), to show what the steps cost and what the cache saves.
3. The throughput of answering, as `metarag.evaluation.qa.evaluate_qa` times it
   (answers per second over ``--eval-questions`` test questions, retrieval and
   RAG-sequence "thorough" decoding with citations), with the adapted model.

Every timed phase runs ``--repeats`` times after one warm-up adaptation; the
median is reported. Figures are for orientation: they depend on the machine's
load, which the JSON records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def uncached_adaptation():
    """Make `adapt` build its loss without the forward and prefix caches (comparison only)."""
    import metarag.meta.adapt as adapt_module
    from metarag.meta.inner import rag_loss_fn

    original = adapt_module.rag_loss_fn
    adapt_module.rag_loss_fn = (lambda model, frozen, encoder_cache=None:
                                rag_loss_fn(model, frozen, cache_size=0))
    try:
        yield
    finally:
        adapt_module.rag_loss_fn = original


def median_time(fn, repeats: int) -> tuple[float, list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="pharmacy", help="synthetic-suite domain to adapt to")
    parser.add_argument("--passages", type=int, default=1000, help="corpus size (entities)")
    parser.add_argument("--shots", type=int, default=16, help="support examples")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each phase")
    parser.add_argument("--eval-questions", type=int, default=32,
                        help="test questions answered for the throughput")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared "
                        "machine a second thread makes ops wait for a core; 2 on a machine of "
                        "your own)")
    parser.add_argument("--k", type=int, default=None, help="passages per question "
                        "(default: RAGConfig's)")
    parser.add_argument("--params", nargs="+", default=None,
                        help="adapted parameters (default: AdaptConfig's)")
    parser.add_argument("--exclude", nargs="*", default=None)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/benchmarks/adapt_latency.json")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers

    from metarag.data.synthetic import synthetic_suite
    from metarag.evaluation.qa import evaluate_qa
    from metarag.meta.adapt import AdaptConfig, adapt
    from metarag.rag.build import ModelConfig, build_model

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load = os.getloadavg()
    config = AdaptConfig()
    if args.params is not None:
        config.params = list(args.params)
    if args.exclude is not None:
        config.exclude = list(args.exclude)
    meta = {
        "command": "python benchmarks/adapt_latency.py " + " ".join(sys.argv[1:] if argv is None
                                                                   else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
        "load_average_at_start": load,
    }
    print(f"machine: {meta['machine']}; torch {meta['torch']} ({meta['torch_threads']} threads); "
          f"load average {load[0]:.1f}")

    (task,) = synthetic_suite(seed=args.seed, n_entities=args.passages, domains=[args.domain])
    support = task.train[:args.shots]
    corpus = task.corpus
    model_config = ModelConfig(precision=args.precision)
    if args.k is not None:
        model_config.rag.k = args.k
    start = time.perf_counter()
    built = build_model(model_config, seed=args.seed)
    built.model.eval()
    load_s = time.perf_counter() - start
    print(f"domain {task.name}: {len(corpus)} passages, {len(support)} shots; adapt "
          f"{config.steps} steps, lr {config.lr}, params {config.params} minus {config.exclude}, "
          f"batch {config.batch_size}; model loaded in {load_s:.1f} s")

    with tempfile.TemporaryDirectory(prefix="metarag-adapt-bench-") as tmp:
        # Warm-up (first calls allocate, load kernels); no cache directory, so it embeds.
        built.cache_dir = None
        adapt(built, support, corpus, config=config)

        def cold() -> Any:
            built.cache_dir = None  # embed the corpus every time: nothing cached on disk
            return adapt(built, support, corpus, config=config)

        cold_s, cold_times, _ = median_time(cold, args.repeats)
        print(f"1. adapt() end to end, embedding {len(corpus)} passages: median {cold_s:.1f} s "
              f"{[round(t, 1) for t in cold_times]}")

        # The corpus embedded once (and kept in the cache dir): what the steps themselves cost.
        built.cache_dir = tmp
        start = time.perf_counter()
        built.use_corpus(corpus)
        index_s = time.perf_counter() - start

        def warm() -> Any:
            return adapt(built, support, None, config=config)

        steps_s, steps_times, adapted = median_time(warm, args.repeats)
        with uncached_adaptation():
            plain_s, plain_times, _ = median_time(warm, args.repeats)
        print(f"   embedding the corpus alone: {index_s:.1f} s")
        print(f"2. adaptation steps alone: median {steps_s:.1f} s with the forward cache, "
              f"{plain_s:.1f} s without ({plain_s / steps_s:.2f}x)")

        adapted.cache_dir = tmp  # evaluate_qa sets the corpus again: reuse the embeddings
        result = evaluate_qa(adapted, task, split="test", max_examples=args.eval_questions)
        print(f"3. answering: {result.answers_per_second:.2f} answers/s over {result.n} "
              f"questions ({result.seconds:.1f} s)")

    meta["load_average_at_end"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - started
    out_data = {
        "meta": meta,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "adapt_config": vars(config), "model_config": {
            "query_max_length": model_config.query_max_length,
            "max_source_length": model_config.max_source_length,
            "max_target_length": model_config.max_target_length, "k": model_config.rag.k,
            "precision": model_config.precision,
            "compute_dtype": str(built.model.generator.compute_dtype)},
        "model_load_s": load_s,
        "adapt_end_to_end_s": {"median": cold_s, "runs": cold_times,
                               "aim_s": 30.0, "within_aim": cold_s <= 30.0},
        "corpus_embedding_s": index_s,
        "adapt_steps_s": {"median": steps_s, "runs": steps_times},
        "adapt_steps_without_cache_s": {"median": plain_s, "runs": plain_times},
        "answering": {"answers_per_second": result.answers_per_second, "questions": result.n,
                      "seconds": result.seconds, "k": model_config.rag.k,
                      "metrics_for_orientation": result.metrics},
    }
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO_ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(out_data, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out} ({meta['wall_s']:.0f} s)")
    return out_data


if __name__ == "__main__":
    main()

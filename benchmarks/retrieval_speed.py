"""Retrieval speed: passage encoding vs sentence-transformers, and FAISS query latency.

Run from the repository root:

    python benchmarks/retrieval_speed.py --passages 2000 --batch-size 64 \
        --out docs/benchmarks/retrieval_speed.json

1. Encoding throughput (passages/s) of ``DenseEncoder.encode`` and of
   sentence-transformers' ``SentenceTransformer(default_encoder_path()).encode`` on
   the same passages (real contexts from ../shared/data when present, else varied
   synthetic text), same batch size and max length, after a warm-up; the two are
   timed in alternating rounds and the best round of each is kept. Their
   embeddings are compared (max |diff|, min cosine).
2. FAISS query latency (ms per single-query call, p50/p95) and batched
   throughput for flat, IVF and HNSW at 10k and 100k passages, on random unit
   384-d vectors, with recall@10 of the approximate indexes against flat.
   Uniform random vectors have no neighbourhood structure, which makes them the
   worst case for approximate search; ``--ann-real N`` adds the same comparison
   on N real passages embedded by MiniLM, queried with real questions.

Figures are meant as ratios within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from metarag.data.schema import Passage
from metarag.retrieval.index import DenseIndex, auto_kind

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_data_dir(explicit: str | None) -> Path | None:
    """The shared datasets: --data, $METARAG_SHARED_DATA, /work/shared/data or ../shared/data."""
    candidates = [explicit, os.environ.get("METARAG_SHARED_DATA"), "/work/shared/data",
                  str(REPO_ROOT.parent / "shared" / "data")]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def real_texts(data: Path) -> tuple[list[str], list[str]]:
    """Unique passages and questions from the English datasets that are easy to read raw.

    Read directly (not through metarag's loaders) so the benchmark depends only on
    the retrieval layer. Returns (passages, questions), each deduplicated.
    """
    passages: dict[str, None] = {}
    questions: dict[str, None] = {}
    for name in ("xquad/xquad.en.json", "policyqa/dev.json", "policyqa/test.json"):
        path = data / name
        if path.is_file():
            for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
                for para in article["paragraphs"]:
                    passages[para["context"]] = None
                    for qa in para["qas"]:
                        questions[qa["question"]] = None
    path = data / "pubmedqa" / "ori_pqal.json"
    if path.is_file():
        for item in json.loads(path.read_text(encoding="utf-8")).values():
            passages[" ".join(item["CONTEXTS"])] = None
            questions[item["QUESTION"]] = None
    for name in ("tatqa/tatqa_dataset_dev.json", "tatqa/tatqa_dataset_test_gold.json"):
        path = data / name
        if path.is_file():
            for doc in json.loads(path.read_text(encoding="utf-8")):
                for para in doc["paragraphs"]:
                    passages[para["text"]] = None
                for q in doc["questions"]:
                    questions[q["question"]] = None
    medquad = data / "medquad"
    if medquad.is_dir():
        import xml.etree.ElementTree as ET

        for path in sorted(medquad.glob("*/*.xml")):
            try:
                root = ET.parse(path).getroot()
            except ET.ParseError:
                continue
            for pair in root.iter("QAPair"):
                answer = " ".join((pair.findtext("Answer") or "").split())
                if answer:
                    passages[answer] = None
                    questions[(pair.findtext("Question") or "").strip()] = None
    questions.pop("", None)
    return list(passages), list(questions)


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """Varied-length pseudo-English text: lognormal lengths around 100 words (5 to 400)."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "lo", "mi", "ran", "te", "su", "vor", "ni", "pe", "dal", "tho", "gre"]
    vocab = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(5000)]
    vocab += ["the", "of", "and", "in", "to", "a", "is", "was", "for", "with"] * 50
    lengths = np.clip(rng.lognormal(mean=4.4, sigma=0.6, size=n), 5, 400).astype(int)
    return [" ".join(rng.choice(vocab, size=k)).capitalize() + "." for k in lengths]


def benchmark_passages(n: int, data: Path | None) -> tuple[list[str], str]:
    """n passages for the encoding benchmark and a description of where they came from."""
    if data is not None:
        texts, _ = real_texts(data)
        if texts:
            rng = np.random.default_rng(0)
            picked = [texts[i] for i in rng.permutation(len(texts))[:n]]
            while len(picked) < n:  # a tiny data folder: repeat rather than shrink the run
                picked += picked[: n - len(picked)]
            return picked, f"real contexts from {data} (xquad, policyqa, pubmedqa, tatqa, medquad)"
    return synthetic_texts(n), "synthetic varied-length text (no shared data found)"


def padding_stats(tokenizer: Any, texts: list[str], batch_size: int, max_length: int
                  ) -> dict[str, float]:
    """Share of real tokens in padded batches: input order, sorted by characters (what
    sentence-transformers does) and sorted by tokens (what DenseEncoder does)."""
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    lengths = [len(x) for x in ids]

    def efficiency(order: list[int]) -> float:
        padded = sum(max(lengths[i] for i in order[b:b + batch_size]) * len(order[b:b + batch_size])
                     for b in range(0, len(order), batch_size))
        return sum(lengths) / padded

    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    by_tokens = sorted(range(len(texts)), key=lambda i: -lengths[i])
    return {"mean_tokens": float(np.mean(lengths)), "max_tokens": int(max(lengths)),
            "real_token_share_unsorted": efficiency(list(range(len(texts)))),
            "real_token_share_char_sorted": efficiency(by_chars),
            "real_token_share_sorted": efficiency(by_tokens)}


def bench_encoding(texts: list[str], batch_size: int, rounds: int) -> dict[str, Any]:
    """Passages/s of DenseEncoder vs SentenceTransformer on the same texts."""
    import torch
    from sentence_transformers import SentenceTransformer

    from metarag.retrieval.encoder import DenseEncoder, default_encoder_path

    ours = DenseEncoder.from_pretrained(default_encoder_path(), max_length=256)
    st = SentenceTransformer(default_encoder_path(), device="cpu")
    st.max_seq_length = ours.max_length

    def run_ours() -> np.ndarray:
        return ours.encode(texts, batch_size=batch_size)

    def run_st() -> np.ndarray:
        return st.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)

    warm = texts[: 2 * batch_size]
    ours.encode(warm, batch_size=batch_size)
    st.encode(warm, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    times: dict[str, list[float]] = {"metarag": [], "sentence_transformers": []}
    out: dict[str, np.ndarray] = {}
    for _ in range(rounds):  # alternate, so drift in machine load hits both alike
        for name, fn in (("metarag", run_ours), ("sentence_transformers", run_st)):
            start = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - start)
    a, b = out["metarag"], out["sentence_transformers"].astype(np.float32)
    best = {k: min(v) for k, v in times.items()}
    rate = {k: len(texts) / t for k, t in best.items()}
    return {
        "passages": len(texts),
        "batch_size": batch_size,
        "max_length": ours.max_length,
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
        "seconds": times,
        "passages_per_s": rate,
        "ratio_metarag_over_st": rate["metarag"] / rate["sentence_transformers"],
        "max_abs_diff": float(np.abs(a - b).max()),
        "min_cosine": float(np.min(np.sum(a * b, axis=1))),
        "padding": padding_stats(ours.tokenizer, texts, batch_size, ours.max_length),
        "embeddings": a,  # reused by --ann-real; dropped before writing JSON
    }


def unit_rows(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_index(passages: list[Passage], emb: np.ndarray, queries: np.ndarray, kind: str,
                exact: list[list[str]] | None, single: int
                ) -> tuple[dict[str, Any], list[list[str]]]:
    """Build time, single-query latency, batched throughput and recall@10 for one index kind."""
    start = time.perf_counter()
    index = DenseIndex.from_embeddings(passages, emb, kind=kind)  # type: ignore[arg-type]
    build_s = time.perf_counter() - start
    index.search_embeddings(queries[:10], 10)  # warm-up
    latencies = []
    for q in queries[:single]:
        start = time.perf_counter()
        index.search_embeddings(q, 10)
        latencies.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    hits = index.search_embeddings(queries, 10)
    batch_s = time.perf_counter() - start
    recall = 1.0 if exact is None else float(np.mean(
        [len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(hits.ids, exact, strict=True)]))
    row = {
        "kind": kind,
        "params": index.search_params(),
        "build_s": build_s,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "batched_queries_per_s": len(queries) / batch_s,
        "recall_at_10_vs_flat": recall,
    }
    return row, hits.ids


def bench_faiss(sizes: list[int], dim: int, n_queries: int, single: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        emb = unit_rows(n, dim, rng)
        queries = unit_rows(n_queries, dim, rng)
        passages = [Passage(f"p{i}", "") for i in range(n)]
        exact = None
        for kind in ("flat", "ivf", "hnsw"):
            row, ids = bench_index(passages, emb, queries, kind, exact, single)
            exact = ids if kind == "flat" else exact
            rows.append({"vectors": "uniform random unit", "passages": n, "dim": dim,
                         "auto_choice": kind == auto_kind(n), **row})
            print_row(rows[-1])
    return rows


def bench_ann_real(n: int, data: Path | None, batch_size: int, n_queries: int,
                   single: int) -> list[dict[str, Any]]:
    """Flat vs IVF vs HNSW on n real passages embedded by MiniLM, queried with real questions."""
    from metarag.retrieval.encoder import DenseEncoder

    if data is None:
        print("--ann-real: no shared data folder, skipped")
        return []
    texts, questions = real_texts(data)
    rng = np.random.default_rng(0)
    texts = [texts[i] for i in rng.permutation(len(texts))[:n]]
    questions = [questions[i] for i in rng.permutation(len(questions))[:n_queries]]
    encoder = DenseEncoder.from_pretrained()
    print(f"--ann-real: embedding {len(texts)} passages and {len(questions)} questions ...")
    emb = encoder.encode(texts, batch_size=batch_size, show_progress=True)
    queries = encoder.encode(questions, batch_size=batch_size)
    passages = [Passage(f"p{i}", "") for i in range(len(texts))]
    rows, exact = [], None
    for kind in ("flat", "ivf", "hnsw"):
        row, ids = bench_index(passages, emb, queries, kind, exact, single)
        exact = ids if kind == "flat" else exact
        rows.append({"vectors": "MiniLM real passages", "passages": len(texts),
                     "dim": int(emb.shape[1]), "auto_choice": kind == auto_kind(len(texts)), **row})
        print_row(rows[-1])
    return rows


def print_row(r: dict[str, Any]) -> None:
    params = ",".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
    star = "*" if r["auto_choice"] else " "
    print(f"  {r['vectors'][:20]:<20} {r['passages']:>8,} {r['kind']:<5}{star}"
          f" {params:<22} build {r['build_s']:7.2f}s  p50 {r['p50_ms']:7.3f} ms  "
          f"p95 {r['p95_ms']:7.3f} ms  batched {r['batched_queries_per_s']:9.0f} q/s  "
          f"recall@10 {r['recall_at_10_vs_flat']:.3f}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=2000, help="passages to encode")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="timed encoding rounds per library")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000],
                        help="corpus sizes for the FAISS benchmark")
    parser.add_argument("--queries", type=int, default=1000, help="queries per FAISS size")
    parser.add_argument("--single", type=int, default=200, help="timed single-query calls")
    parser.add_argument("--ann-real", type=int, default=0, metavar="N",
                        help="also compare index kinds on N real MiniLM-embedded passages")
    parser.add_argument("--data", default=None, help="shared datasets folder")
    parser.add_argument("--out", default="docs/benchmarks/retrieval_speed.json")
    args = parser.parse_args(argv)

    import faiss
    import sentence_transformers
    import torch
    import transformers

    data = find_data_dir(args.data)
    meta = {
        "command": "python benchmarks/retrieval_speed.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
    }
    print(f"machine: {meta['machine']}; torch {meta['torch']} ({meta['torch_threads']} threads), "
          f"faiss {meta['faiss']} ({meta['faiss_threads']} threads)")

    texts, source = benchmark_passages(args.passages, data)
    print(f"\n1. Encoding {len(texts)} passages, batch {args.batch_size}: {source}")
    enc = bench_encoding(texts, args.batch_size, args.rounds)
    enc["source"] = source
    enc.pop("embeddings")
    rate = enc["passages_per_s"]
    print(f"  metarag DenseEncoder      {rate['metarag']:8.1f} passages/s")
    print(f"  sentence-transformers     {rate['sentence_transformers']:8.1f} passages/s")
    print(f"  ratio metarag / ST        {enc['ratio_metarag_over_st']:8.3f}")
    print(f"  agreement: max |diff| {enc['max_abs_diff']:.2e}, min cosine {enc['min_cosine']:.6f}")
    pad = enc["padding"]
    print(f"  real-token share of padded batches: {pad['real_token_share_unsorted']:.1%} in input "
          f"order, {pad['real_token_share_char_sorted']:.1%} sorted by characters (ST), "
          f"{pad['real_token_share_sorted']:.1%} by tokens (metarag); "
          f"mean {pad['mean_tokens']:.0f} tokens")

    print(f"\n2. FAISS, uniform random unit {384}-d vectors, k=10 (* = kind='auto' picks it)")
    rows = bench_faiss(args.sizes, 384, args.queries, args.single)
    if args.ann_real:
        rows += bench_ann_real(args.ann_real, data, args.batch_size, args.queries, args.single)

    result = {"meta": meta, "encoding": enc, "faiss": rows}
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO_ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()

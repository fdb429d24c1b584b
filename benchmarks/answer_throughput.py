"""Answers per second on the default generator: precision, batching, and llama.cpp.

Run from the repository root (the figures in docs/BENCHMARKS.md):

    python benchmarks/answer_throughput.py --out docs/benchmarks/answer_throughput.json

The prompts are what `metarag evaluate` gives Gemma 3 270M with fast decoding:
``--questions`` agxqa test questions, each with its top BM25 passage (``Context:
... Question: ... Answer:``, about 160 tokens), greedy, at most ``--max-new-tokens``
new tokens, stopping at EOS or the line end. Each engine answers the same prompts:

- ``one_at_a_time/float32``: ``Generator.generate([prompt])`` per prompt in float32
  (HF ``generate``, KV cache): the reference every ratio is taken against (the
  first of ``--precisions`` one at a time, float32 by default);
- ``batched_B/P``: ``Generator.generate(prompts, batch_size=B)`` in precision P
  (`metarag.generation.precision`): left-padded batches with the KV cache, what
  ``RAGModel.answer`` runs; ``one_at_a_time/bfloat16`` likewise;
- ``llama_cpp``: llama.cpp through llama-cpp-python on the same GGUF file (Q4_K_M
  weights, one prompt at a time, the same token ids in), in its own venv
  (``--llama-venv``, built from the sdist on first use: about 5 minutes).

Every engine answers two prompts to warm up, then all of them ``--repeats`` times
in turn (interleaved, so load drift hits all alike); the median time is reported
with the ratio to the reference from the same run, token F1 against the gold
answers (so a faster engine cannot hide worse answers), and how many answers equal
the reference's. The matrix-product peak of this CPU (float32 and bfloat16) and the
FLOPs of one batched run (``FlopCounterMode``: matrix products only) give the
achieved GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("METARAG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
LLAMA_CPP = "llama-cpp-python==0.3.36"
# llama.cpp's default build (-march=native) segfaults in its first decode on this
# machine (AMX in a VM); a build for the CPU's AVX flags without AMX runs.
_LLAMA_FLAGS = {"avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C",
                "avx512f": "AVX512", "avx512vbmi": "AVX512_VBMI",
                "avx512_vnni": "AVX512_VNNI", "avx512_bf16": "AVX512_BF16"}


def llama_cmake_args() -> str:
    """CMAKE_ARGS for llama.cpp: this CPU's AVX extensions (``/proc/cpuinfo``), no AMX."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    on = " ".join(f"-DGGML_{name}={'ON' if flag in flags else 'OFF'}"
                  for flag, name in _LLAMA_FLAGS.items())
    return f"-DGGML_NATIVE=OFF {on} -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"


def questions(n: int) -> tuple[list, list[list[str]]]:
    """(sources, gold answers) of the first ``n`` agxqa test questions, top BM25 passage."""
    from metarag.data.loaders import load_task
    from metarag.generation.prompt import make_source
    from metarag.retrieval import BM25Index

    task = load_task(DATA / "agxqa")
    examples = task.test[:n]
    by_id = task.passage_lookup()
    hits = BM25Index.build(task.corpus).search([e.question for e in examples], k=1)
    sources = [make_source(e.question, [by_id[i] for i in ids])
               for e, ids in zip(examples, hits.ids)]
    return sources, [list(e.answers) for e in examples]


def matmul_peak(dtype, threads: int, size: int = 1024, seconds: float = 2.0) -> float:
    """GFLOP/s of a square matrix product in ``dtype`` on ``threads`` threads."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        n += 1
    return 2 * size ** 3 * n / (time.perf_counter() - started) / 1e9


def ensure_llama_venv(venv: Path) -> Path:
    """The venv's python with llama-cpp-python installed (built from source once)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import llama_cpp"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"building {LLAMA_CPP} into {venv} (once; about 5 minutes) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-cache-dir", LLAMA_CPP],
                   check=True, env={**os.environ, "CMAKE_ARGS": llama_cmake_args()})
    return python


def llama_cpp_answers(python: Path, gguf: Path, token_ids: list[list[int]], *,
                      max_new_tokens: int, threads: int, repeats: int) -> dict:
    job = {"gguf": str(gguf), "prompts": token_ids, "max_new_tokens": max_new_tokens,
           "threads": threads, "repeats": repeats}
    worker = Path(__file__).with_name("llama_cpp_answers.py")
    done = subprocess.run([str(python), str(worker)], input=json.dumps(job), text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:  # reported in the results, not fatal to the other rows
        return {"error": f"exit status {done.returncode}: {done.stderr[-2000:].strip()}"}
    return json.loads(done.stdout)


def time_interleaved(engines: dict, sources: list, repeats: int
                     ) -> tuple[dict[str, list[float]], dict[str, list[str]]]:
    """Each engine answers two prompts to warm up, then all of them ``repeats`` times in
    turn (interleaved, so load drift hits all alike): (seconds per run, last answers)."""
    for fn in engines.values():
        fn(sources[:2])
    times: dict[str, list[float]] = {name: [] for name in engines}
    answers: dict[str, list[str]] = {}
    for _ in range(repeats):
        for name, fn in engines.items():
            started = time.perf_counter()
            answers[name] = fn(sources)
            times[name].append(time.perf_counter() - started)
    return times, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 24])
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-venv", default=str(REPO_ROOT / ".venv-llama"),
                        help="venv for llama-cpp-python (built here when missing)")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip the llama.cpp row")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if not (DATA / "agxqa").is_dir():
        sys.exit(f"agxqa not found under {DATA}; set METARAG_SHARED_DATA")

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from metarag.evaluation.metrics import token_f1_scores
    from metarag.generation import Generator
    from metarag.generation.base import default_gguf

    torch.set_num_threads(args.threads)
    llama_python = None if args.no_llama_cpp else ensure_llama_venv(Path(args.llama_venv))
    sources, gold = questions(args.questions)
    load_started = time.perf_counter()
    generator = Generator.from_pretrained("causal", max_source_length=384)
    load_s = time.perf_counter() - load_started
    token_ids = [generator.tokenize([s])["input_ids"][0].tolist() for s in sources]
    lengths = [len(t) for t in token_ids]

    def engine(batch: int | None, precision: str):
        def run(chunk: list) -> list[str]:
            generator.set_precision(precision)
            if batch is None:
                return [generator.generate([s], max_new_tokens=args.max_new_tokens)[0]
                        for s in chunk]
            return generator.generate(chunk, max_new_tokens=args.max_new_tokens,
                                      batch_size=batch)
        return run

    engines = {}
    for precision in args.precisions:
        engines[f"one_at_a_time/{precision}"] = engine(None, precision)
        for b in args.batch_sizes:
            engines[f"batched_{b}/{precision}"] = engine(b, precision)
    reference_name = f"one_at_a_time/{args.precisions[0]}"
    times, answers = time_interleaved(engines, sources, args.repeats)
    llama_version = None
    if llama_python is not None:
        done = llama_cpp_answers(llama_python, default_gguf(), token_ids,
                                 max_new_tokens=args.max_new_tokens, threads=args.threads,
                                 repeats=args.repeats)
        if "error" in done:
            llama_version = done["error"]
            print(f"llama.cpp failed, its row is left out: {done['error']}", flush=True)
        else:
            times["llama_cpp"], answers["llama_cpp"] = done["seconds_all"], done["answers"]
            llama_version = done["version"]

    # Achieved GFLOP/s: FLOPs of the largest batched run per precision (an extra,
    # untimed run: the counter slows it), over its timed seconds.
    peaks = {p: matmul_peak(getattr(torch, p), args.threads) for p in args.precisions}
    flops = {}
    for precision in args.precisions:
        name = f"batched_{max(args.batch_sizes)}/{precision}"
        counter = FlopCounterMode(display=False)
        with counter:
            engines[name](sources)
        flops[name] = counter.get_total_flops()

    reference = statistics.median(times[reference_name])
    rows = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        f1 = token_f1_scores(answers[name], gold)
        rows[name] = {"seconds": median, "seconds_all": ts,
                      "answers_per_s": len(sources) / median, "speedup": reference / median,
                      "f1": 100 * statistics.mean(f1),
                      "same_answers": sum(a.strip() == b.strip() for a, b in
                                          zip(answers[name], answers[reference_name]))}
        if name in flops:
            precision = name.split("/")[1]
            rows[name]["gflop"] = flops[name] / 1e9
            rows[name]["gflop_per_s"] = flops[name] / 1e9 / median
            rows[name]["of_matmul_peak"] = rows[name]["gflop_per_s"] / peaks[precision]
    if "llama_cpp" in rows:
        for row in rows.values():
            row["vs_llama_cpp"] = row["answers_per_s"] / rows["llama_cpp"]["answers_per_s"]
    result = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_avg": os.getloadavg(), "llama_cpp_python": llama_version,
                    "matmul_peak_gflop_per_s": peaks},
        "model": {"generator": generator.base_identity, "load_seconds": load_s},
        "prompts": {"n": len(sources), "tokens_mean": statistics.mean(lengths),
                    "tokens_max": max(lengths), "max_new_tokens": args.max_new_tokens},
        "reference": reference_name,
        "engines": rows,
        "examples": [{"question": s.question, "gold": g, **{n: answers[n][i] for n in answers}}
                     for i, (s, g) in enumerate(zip(sources[:3], gold))],
    }
    print(f"{len(sources)} agxqa prompts, {statistics.mean(lengths):.0f} tokens on average, "
          f"<= {args.max_new_tokens} new tokens, {args.threads} threads; matmul peak "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items()))
    print(f"{'engine':<24}{'seconds':>9}{'answers/s':>11}{'vs ref':>9}{'vs llama':>10}"
          f"{'F1':>7}{'same':>7}{'GFLOP/s':>9}")
    for name, row in rows.items():
        vs_llama = f"{row['vs_llama_cpp']:.2f}x" if "vs_llama_cpp" in row else "-"
        gflops = f"{row['gflop_per_s']:.0f}" if "gflop_per_s" in row else "-"
        print(f"{name:<24}{row['seconds']:>9.1f}{row['answers_per_s']:>11.2f}"
              f"{row['speedup']:>8.2f}x{vs_llama:>10}{row['f1']:>7.1f}"
              f"{row['same_answers']:>4}/{len(sources)}{gflops:>9}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()

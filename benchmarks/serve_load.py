"""Load on `metarag serve`: C concurrent clients over several domains for T seconds (loopback).

Run from the repository root (the figures in docs/BENCHMARKS.md, "Serving under load"):

    python benchmarks/serve_load.py --clients 8 --seconds 20 \
        --out docs/benchmarks/serve_load.json

By default it builds a tiny setup in a temporary folder (nothing downloaded): a
random 2-layer encoder with MiniLM's tokenizer, a tiny random Gemma-style
generator with LoRA r=2 as the base checkpoint, and three domains adapted from it
with `metarag adapt` on synthetic suite domains (each with its own corpus, index
and LoRA weights). ``--base CKPT --domain NAME=DIR ...`` serves real checkpoints
instead (questions then come from ``--questions-file``, one per line, or a
default few).

The server is the real command (`python -m metarag serve`, a subprocess bound to
127.0.0.1 with an API key), so the figures include HTTP, JSON, the batching
window and domain swaps. Each client thread sends one request at a time (a
random domain and question, seeded), until ``--seconds`` pass or
``--max-requests`` are sent. Reported: answers per second, latency percentiles,
errors (any non-200; the run fails if there is one), the server's batches and
domain swaps, and the server process's resident memory (VmRSS from /proc,
sampled every ``--sample-ms``) from after the warm-up to the end, with its mean
per quarter of the run: the change from the 2nd to the 4th quarter shows whether
it levels off.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_DOMAINS = ("synthetic/pharmacy", "synthetic/legal", "synthetic/finance")


def tiny_setup(root: Path) -> tuple[Path, list[str], dict[str, list[str]]]:
    """Base checkpoint, ``NAME=DIR`` domain specs and test questions per domain, all tiny."""
    from dataclasses import asdict

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    from typer.testing import CliRunner

    from metarag.checkpoint import save_checkpoint
    from metarag.cli import app
    from metarag.data.loaders import load_task
    from metarag.generation.adapters import LoRAConfig
    from metarag.meta.params import select_params
    from metarag.rag.build import (
        BASE_KEY,
        MODEL_CONFIG_KEY,
        ModelConfig,
        base_record,
        build_model,
        model_weights,
    )
    from metarag.rag.model import RAGConfig
    from metarag.retrieval.encoder import default_encoder_path

    torch.manual_seed(0)
    encoder = root / "encoder"
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128)).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    config = ModelConfig(encoder=str(encoder), generator="tiny", generator_kind="causal",
                         max_source_length=96, max_target_length=16, lora=LoRAConfig(r=2),
                         rag=RAGConfig(k=2, max_new_tokens=8))
    built = build_model(config)
    base = save_checkpoint(root / "base", 0, model=model_weights(
        built.model, select_params(built.model, ["lora"])), state={
            MODEL_CONFIG_KEY: asdict(config), BASE_KEY: base_record(built.model, seed=0)})
    specs, questions = [], {}
    for task in TINY_DOMAINS:
        name = task.split("/")[1]
        out = root / name
        result = CliRunner().invoke(app, ["adapt", "--checkpoint", str(base), "--task-file",
                                          task, "--shots", "4", "--steps", "2", "--lr", "0.05",
                                          "--out", str(out), "--cache-dir", "none"])
        if result.exit_code != 0:
            sys.exit(f"adapt {task} failed:\n{result.output}")
        specs.append(f"{name}={out}")
        # The command's logging went to the runner's (now closed) stream: take it back.
        logging.getLogger().handlers.clear()
        questions[name] = [e.question for e in load_task(task).test[:32]]
    return base, specs, questions


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}; see its log")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"the server was not up after {timeout:.0f} s")


def run_clients(url: str, key: str, questions: dict[str, list[str]], *, clients: int,
                seconds: float, max_requests: int, seed: int) -> list[dict]:
    """C threads, one request at a time each; returns one record per request."""
    import httpx

    records: list[dict] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    sent = [0]

    def client(i: int) -> None:
        rng = random.Random(f"{seed}:{i}")
        names = sorted(questions)
        with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=120) as http:
            while time.monotonic() < stop_at:
                with lock:
                    if sent[0] >= max_requests:
                        return
                    sent[0] += 1
                name = rng.choice(names)
                body = {"domain": name, "question": rng.choice(questions[name])}
                started = time.perf_counter()
                try:
                    reply = http.post(f"{url}/v1/answer", json=body)
                    status, data = reply.status_code, reply.json()
                except (httpx.HTTPError, ValueError) as err:
                    status, data = -1, {"detail": repr(err)}
                latency = time.perf_counter() - started
                with lock:
                    records.append({"domain": name, "status": status, "latency_s": latency,
                                    "batch_size": data.get("timings", {}).get("batch_size"),
                                    "detail": data.get("detail")})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--base", default=None, help="a real base checkpoint (default: tiny)")
    parser.add_argument("--domain", action="append", default=[],
                        help="NAME=ADAPTED_DIR[,index=DIR] with --base; repeat")
    parser.add_argument("--questions-file", default=None,
                        help="with --base: questions, one per line (asked of every domain)")
    parser.add_argument("--server-threads", type=int, default=1,
                        help="torch threads of the server (OMP_NUM_THREADS)")
    parser.add_argument("--batch-window-ms", type=float, default=10.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--sample-ms", type=float, default=250.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1:
        sys.exit("--clients, --seconds and --max-requests must be positive")

    import httpx

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        if args.base:
            if not args.domain:
                sys.exit("--base needs at least one --domain NAME=ADAPTED_DIR")
            base, specs = Path(args.base), args.domain
            asked = (Path(args.questions_file).read_text().splitlines() if args.questions_file
                     else ["What is this about?", "Who is responsible for it?",
                           "How much does it cost?", "When does it take effect?"])
            asked = [q for q in asked if q.strip()]
            questions = {s.split("=", 1)[0]: asked for s in specs}
            setup = "given checkpoints"
        else:
            started = time.perf_counter()
            base, specs, questions = tiny_setup(root)
            setup = f"tiny (built in {time.perf_counter() - started:.0f} s)"
        key = secrets.token_urlsafe(32)
        (root / "key").write_text(key)
        (root / "key").chmod(0o600)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "metarag", "serve", "--base", str(base),
                   *[a for s in specs for a in ("--domain", s)], "--port", str(port),
                   "--api-key-file", str(root / "key"), "--batch-window-ms",
                   str(args.batch_window_ms), "--max-batch", str(args.max_batch)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.server_threads),
               "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        log = open(root / "server.log", "w")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_up(url, proc, timeout=600)
            auth = {"authorization": f"Bearer {key}"}
            for name, qs in questions.items():  # warm-up: every domain loaded once
                reply = httpx.post(f"{url}/v1/answer", json={"domain": name, "question": qs[0]},
                                   headers=auth, timeout=600)
                if reply.status_code != 200:
                    sys.exit(f"warm-up on {name} failed: {reply.status_code} {reply.text}")
            before = httpx.get(f"{url}/healthz").json()
            samples: list[tuple[float, int]] = []
            done = threading.Event()
            t0 = time.monotonic()

            def sample() -> None:
                while not done.is_set():
                    samples.append((time.monotonic() - t0, rss_bytes(proc.pid)))
                    done.wait(args.sample_ms / 1000)

            sampler = threading.Thread(target=sample)
            sampler.start()
            records = run_clients(url, key, questions, clients=args.clients,
                                  seconds=args.seconds, max_requests=args.max_requests,
                                  seed=args.seed)
            wall = time.monotonic() - t0
            done.set()
            sampler.join()
            after = httpx.get(f"{url}/healthz").json()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        server_log = (root / "server.log").read_text()

    ok = [r for r in records if r["status"] == 200]
    errors = [r for r in records if r["status"] != 200]
    latencies = [r["latency_s"] * 1000 for r in ok]
    rss = [b for _, b in samples]
    quarters = [[b for t, b in samples if q * wall / 4 <= t < (q + 1) * wall / 4] or [rss[-1]]
                for q in range(4)]
    quarter_mb = [round(statistics.mean(q) / 2**20, 1) for q in quarters]
    result = {
        "clients": args.clients, "seconds": args.seconds, "wall_s": round(wall, 2),
        "domains": sorted(questions), "setup": setup, "requests": len(records),
        "ok": len(ok), "errors": len(errors),
        "error_examples": [{"status": r["status"], "detail": r["detail"]} for r in errors[:5]],
        "answers_per_s": round(len(ok) / wall, 2),
        "latency_ms": {f"p{q}": round(percentile(latencies, q), 1) for q in (50, 95, 99)}
        if latencies else None,
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "mean_batch_size": round(statistics.mean(r["batch_size"] for r in ok), 2) if ok else None,
        "server_batches": after["batches"] - before["batches"],
        "server_swaps": after["swaps"] - before["swaps"],
        "rss_mb": {"start": round(rss[0] / 2**20, 1), "max": round(max(rss) / 2**20, 1),
                   "end": round(rss[-1] / 2**20, 1),
                   "quarter_means": quarter_mb,
                   "growth_q2_to_q4": round(quarter_mb[3] - quarter_mb[1], 1)},
        "rss_samples_mb": [[round(t, 2), round(b / 2**20, 1)] for t, b in samples],
        "settings": {"batch_window_ms": args.batch_window_ms, "max_batch": args.max_batch,
                     "server_threads": args.server_threads, "seed": args.seed},
        "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    print(f"{'clients':>8} {'requests':>9} {'errors':>7} {'answers/s':>10} {'p50 ms':>8} "
          f"{'p95 ms':>8} {'p99 ms':>8} {'batch':>6} {'swaps':>6} {'RSS start/max/end MB':>22}")
    lat = result["latency_ms"] or {"p50": 0, "p95": 0, "p99": 0}
    r = result["rss_mb"]
    print(f"{args.clients:>8} {len(records):>9} {len(errors):>7} {result['answers_per_s']:>10} "
          f"{lat['p50']:>8} {lat['p95']:>8} {lat['p99']:>8} {result['mean_batch_size']!s:>6} "
          f"{result['server_swaps']:>6} {r['start']:>8}/{r['max']}/{r['end']}")
    print(f"RSS mean per quarter of the run: {r['quarter_means']} MB "
          f"(2nd -> 4th quarter: {r['growth_q2_to_q4']:+} MB)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    if errors:
        print(server_log[-4000:], file=sys.stderr)
        sys.exit(f"{len(errors)} requests failed, e.g. {result['error_examples'][0]}")


if __name__ == "__main__":
    main()

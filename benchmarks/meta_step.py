"""Meta-step speed and memory: metarag vs `higher` vs a plain torch.func loop, side by side.

Run from the repository root (the figures in docs/BENCHMARKS.md):

    python benchmarks/meta_step.py --out docs/benchmarks/meta_step.json

One invocation builds each model once and runs the same meta-batch through
three implementations of the same meta-step (MAML second order, or FOMAML):

- ``metarag``: `metarag.meta.maml_step` with `metarag.meta.rag_loss_fn`, a new
  loss function for every meta-step sharing one `metarag.rag.model.EncoderCache`,
  as `meta_train` keeps it across meta-steps: after the warm-up step every source of
  the meta-batch has been seen (warm; the issue's protocol, "median time per
  meta-step after warm-up" over one meta-batch);
- ``metarag_cold``: the same with a new, empty encoder cache for every meta-step
  (the first visit of a meta-batch's sources);
- ``higher``: ``higher.innerloop_ctx`` with its differentiable SGD, as in
  higher's MAML example (``copy_initial_weights=False``; first order: fast
  weights without higher-order tracking and the query gradient taken at them);
- ``torch_func``: the plain reference loop, ``torch.func.functional_call`` +
  ``torch.autograd.grad(..., create_graph=True)`` over the same parameter dicts.

All three adapt the same parameters (by default `metarag.meta.adapt.AdaptConfig`'s:
LoRA, which the default model has in the top 4 of Gemma's 18 layers) of the same
`RAGModel` (in the default model's precision: bfloat16 products where the CPU has
them) in eval mode (no dropout), on the same episodes (support and query
sets of synthetic-suite tasks, retrieving from the union of their corpora),
with the same inner learning rate. Each meta-step returns the mean query loss
and the meta-gradients; those are compared across implementations.

Time: after one warm-up meta-step per implementation, ``--repeats`` rounds in
which every implementation runs one meta-step, in a rotating order so that
drift in the load of a shared machine hits all alike; the median is reported.
Memory: the peak of live torch tensor bytes (torch's CPU allocator, seen through
``torch.profiler`` with ``profile_memory=True``) during one more meta-step,
minus the bytes live when it starts. It counts tensors only (not Python objects
or library scratch space), which is what differs between implementations.
FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one meta-step
(matrix products and attention only, forward and backward of every order).
Figures are meant as ratios within one run.

How much of meta-training the warm figure describes: ``--hit-rate-steps`` draws
that many meta-batches from `MetaBatchSampler` on the synthetic suite and counts
the questions seen in an earlier meta-step (with the retriever fixed, each brings
its k sources back: encoder-cache hits), as the benchmark's settings and as
``configs/meta-synthetic.yaml``'s draw them.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("metarag", "metarag_cold", "higher", "torch_func")
OURS = ("metarag", "metarag_cold")


@dataclass
class Setup:
    """A model with its adapted/frozen split and a meta-batch, shared by all implementations."""

    name: str
    model: Any                      # RAGModel, eval mode
    meta_params: dict[str, Any]     # adapted: the module's own parameters
    frozen: dict[str, Any]          # the rest, detached
    episodes: list[Any]             # Episode(support=Batch, query=Batch, task_name)
    lr: float
    description: dict[str, Any]
    encoder_cache: Any = None       # EncoderCache shared by the warm metarag's meta-steps


@dataclass
class StepResult:
    loss: float
    grads: dict[str, Any]


# ---------------------------------------------------------------------------- setup


def tiny_encoder_dir() -> str:
    """A 2-layer, 32-wide random BERT with MiniLM's tokenizer, as the tests build it."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from metarag.retrieval.encoder import default_encoder_path

    out = tempfile.mkdtemp(prefix="metarag-tiny-encoder-")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=256)
        BertModel(config).save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


def build_setup(name: str, args: argparse.Namespace) -> Setup:
    import torch

    from metarag.data.episodes import Episode, MetaBatchSampler
    from metarag.data.synthetic import synthetic_suite
    from metarag.meta.inner import Batch
    from metarag.meta.params import select_params, split_params
    from metarag.rag.build import ModelConfig, build_model
    from metarag.rag.model import RAGConfig

    lengths = {"query_max_length": args.query_max_length,
               "max_source_length": args.max_source_length,
               "max_target_length": args.max_target_length}
    rag = RAGConfig(k=args.k)
    if name == "tiny":
        config = ModelConfig(encoder=tiny_encoder_dir(), generator="tiny", rag=rag, **lengths)
    else:
        config = ModelConfig(rag=rag, **lengths)
    torch.manual_seed(args.seed)  # the LM-head transform starts random
    built = build_model(config, seed=args.seed)
    built.cache_dir = args.cache_dir
    model = built.model
    model.eval()  # no dropout: the implementations must agree, as meta_train runs it
    tasks = synthetic_suite()
    sampler = MetaBatchSampler(tasks, n_shot=args.shots, n_query=args.queries,
                               meta_batch_size=args.tasks, seed=args.seed)
    drawn = sampler.sample()
    used = sorted({e.task_name for e in drawn})
    corpus = [p for t in tasks if t.name in used for p in t.corpus]
    built.use_corpus(corpus)
    episodes = [Episode(Batch.from_examples(e.support), Batch.from_examples(e.query), e.task_name)
                for e in drawn]
    names = select_params(model, args.params, args.exclude)
    # As meta_train does: only the meta-parameters require grad, so no implementation
    # builds a graph through the frozen weights.
    for p in model.parameters():
        p.requires_grad_(False)
    meta_params, frozen = split_params(model, names)
    for p in meta_params.values():
        p.requires_grad_(True)
    adapted_n = sum(p.numel() for p in meta_params.values())
    description = {
        "model": name, "model_config": {**lengths, "k": args.k,
                                        "generator": config.generator or "Gemma 3 270M"},
        "compute_dtype": str(model.generator.compute_dtype),
        "parameters_total": sum(p.numel() for p in model.parameters()),
        "parameters_adapted": adapted_n, "tensors_adapted": len(names),
        "params": list(args.params), "exclude": list(args.exclude),
        "tasks": [e.task_name for e in drawn], "corpus_passages": len(corpus),
        "shots": args.shots, "queries": args.queries, "inner_lr": args.inner_lr,
    }
    return Setup(name, model, meta_params, frozen, episodes, args.inner_lr, description)


# ------------------------------------------------------------------ implementations


def step_metarag(setup: Setup, steps: int, first_order: bool, *, cold: bool = False
                 ) -> StepResult:
    from metarag.meta.algorithms import maml_step
    from metarag.meta.inner import rag_loss_fn
    from metarag.rag.model import source_cache

    def new_cache():  # BERT2BERT: its encoder's states; Gemma: the frozen blocks' (PrefixCache)
        return source_cache(setup.model, list(setup.meta_params))

    if setup.encoder_cache is None:
        setup.encoder_cache = new_cache()
    # A new loss function per meta-step (its per-batch caches start empty); the per-source
    # cache is the run's (warm) or a new one (cold).
    loss_fn = rag_loss_fn(setup.model, setup.frozen,
                          encoder_cache=new_cache() if cold else setup.encoder_cache)
    result = maml_step(loss_fn, setup.meta_params, setup.episodes, inner_steps=steps,
                       inner_lr=setup.lr, first_order=first_order)
    return StepResult(result.loss, result.grads)


def step_metarag_cold(setup: Setup, steps: int, first_order: bool) -> StepResult:
    return step_metarag(setup, steps, first_order, cold=True)


def step_torch_func(setup: Setup, steps: int, first_order: bool) -> StepResult:
    """The reference loop: functional_call over parameter dicts, autograd.grad for every step."""
    import torch
    from torch.func import functional_call

    model, frozen, meta = setup.model, setup.frozen, setup.meta_params

    def loss_fn(params, batch):
        return functional_call(model, {**frozen, **params}, (batch.questions, batch.answers)).loss

    n = len(setup.episodes)
    totals = {k: torch.zeros_like(v) for k, v in meta.items()}
    losses = []
    for episode in setup.episodes:
        params = dict(meta)
        for _ in range(steps):
            loss = loss_fn(params, episode.support)
            grads = torch.autograd.grad(loss, list(params.values()),
                                        create_graph=not first_order, allow_unused=True)
            params = {k: p if g is None else p - setup.lr * g
                      for (k, p), g in zip(params.items(), grads)}
        query_loss = loss_fn(params, episode.query)
        meta_grads = torch.autograd.grad(query_loss / n, list(meta.values()), allow_unused=True)
        for k, g in zip(meta, meta_grads):
            if g is not None:
                totals[k] += g
        losses.append(query_loss.item())
    return StepResult(sum(losses) / n, totals)


def step_higher(setup: Setup, steps: int, first_order: bool) -> StepResult:
    """higher's MAML idiom: innerloop_ctx + differentiable SGD, query loss backward into .grad."""
    import higher
    import torch

    model, meta = setup.model, setup.meta_params
    names = list(meta)
    inner_opt = torch.optim.SGD(list(meta.values()), lr=setup.lr)
    n = len(setup.episodes)
    for p in meta.values():
        p.grad = None
    totals = {k: torch.zeros_like(v) for k, v in meta.items()}
    losses = []
    for episode in setup.episodes:
        with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                  track_higher_grads=not first_order) as (fmodel, diffopt):
            _retrieve_with_fast_weights(fmodel, model)
            for _ in range(steps):
                diffopt.step(fmodel(episode.support.questions, episode.support.answers).loss)
            query_loss = fmodel(episode.query.questions, episode.query.answers).loss
            if first_order:
                # Without higher-order tracking the fast weights are detached leaves: FOMAML's
                # meta-gradient is the query gradient taken at them.
                fast = dict(zip([n_ for n_, _ in model.named_parameters()], fmodel.fast_params))
                grads = torch.autograd.grad(query_loss / n, [fast[k] for k in names],
                                            allow_unused=True)
                for k, g in zip(names, grads):
                    if g is not None:
                        totals[k] += g
            else:
                (query_loss / n).backward()
            losses.append(query_loss.item())
    if not first_order:
        for k, p in meta.items():
            if p.grad is not None:
                totals[k] = p.grad
            p.grad = None
    return StepResult(sum(losses) / n, totals)


def _retrieve_with_fast_weights(fmodel: Any, model: Any) -> None:
    """Point the patched model's retrieval at the patched query encoder.

    higher copies a module's attributes shallowly, so the patched RAGModel's
    ``_query_encoder`` (a plain object that pools and normalises) would still call
    the original ``query_model``; give it a copy whose ``model`` is the patched one.
    """
    encoder = copy.copy(model._query_encoder)
    encoder.model = fmodel.query_model
    object.__setattr__(fmodel, "_query_encoder", encoder)


STEPS: dict[str, Callable[[Setup, int, bool], StepResult]] = {
    "metarag": step_metarag, "metarag_cold": step_metarag_cold, "higher": step_higher,
    "torch_func": step_torch_func}


# ---------------------------------------------------------------------- measurement


def timed(fn: Callable[[], StepResult]) -> tuple[float, StepResult]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def peak_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Peak live bytes of torch CPU tensors while ``fn`` runs, above those live at its start."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
              and str(e.device_type()).endswith("CPU")]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def flop_count(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def compare(results: dict[str, StepResult]) -> dict[str, float]:
    """Largest difference of the loss, and of the meta-gradient relative to its norm.

    The gradient difference is over all meta-parameters at once,
    ``||g_impl - g_ref|| / ||g_ref||`` (a per-tensor ratio would be noise for
    tensors whose gradient is nearly zero).
    """
    import torch

    def norm(grads: dict[str, Any]) -> float:
        return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())))

    names = list(results)
    ref = results[names[0]]
    ref_norm = norm(ref.grads) or 1.0
    loss_diff = max(abs(r.loss - ref.loss) for r in results.values())
    grad_diff = max(norm({k: r.grads[k] - g for k, g in ref.grads.items()}) / ref_norm
                    for r in results.values())
    return {"loss_max_abs_diff": loss_diff, "grad_max_rel_diff": grad_diff,
            "grad_norm": ref_norm}


def matmul_gflops(threads: int, size: int = 1024, repeats: int = 20, dtype: str = "float32"
                  ) -> dict[str, float]:
    """This CPU's matmul throughput with torch: best of ``repeats`` n x n products."""
    import torch

    a, b = (torch.randn(size, size, dtype=getattr(torch, dtype)) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return {"size": size, "threads": threads, "dtype": dtype, "best_s": best,
            "gflops": 2 * size ** 3 / best / 1e9}


def run_config(setup: Setup, steps: int, first_order: bool, impls: list[str], repeats: int,
               memory: bool, flops: bool) -> dict[str, Any]:
    order = "first" if first_order else "second"
    label = f"{setup.name}, {order} order, {steps} inner step{'s' if steps > 1 else ''}"
    print(f"\n{label}", flush=True)
    warm: dict[str, StepResult] = {}
    failed: dict[str, str] = {}
    for impl in impls:  # warm-up, and the results that are compared
        try:
            seconds, warm[impl] = timed(lambda impl=impl: STEPS[impl](setup, steps, first_order))
        except Exception as err:  # a peer that cannot run this model is reported, not fatal
            if impl in OURS:
                raise
            failed[impl] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            print(f"  warm-up {impl:<12} failed: {failed[impl]}", flush=True)
            continue
        print(f"  warm-up {impl:<12} {seconds:8.2f} s  loss {warm[impl].loss:.6f}", flush=True)
    impls = [i for i in impls if i not in failed]
    times: dict[str, list[float]] = {i: [] for i in impls}
    for r in range(repeats):
        rotated = impls[r % len(impls):] + impls[:r % len(impls)]
        for impl in rotated:
            seconds, _ = timed(lambda impl=impl: STEPS[impl](setup, steps, first_order))
            times[impl].append(seconds)
    rows = {}
    for impl in impls:
        row: dict[str, Any] = {"seconds": times[impl],
                               "median_s": statistics.median(times[impl]) if times[impl] else None,
                               "loss": warm[impl].loss}
        if memory:
            row["peak_mb"] = peak_tensor_bytes(
                lambda impl=impl: STEPS[impl](setup, steps, first_order)) / 2**20
        if flops:
            row["gflop"] = flop_count(
                lambda impl=impl: STEPS[impl](setup, steps, first_order)) / 1e9
        rows[impl] = row
        mem = f"  peak {row['peak_mb']:8.1f} MB" if memory else ""
        fl = f"  {row['gflop']:7.1f} GFLOP" if flops else ""
        med = row["median_s"]
        print(f"  {impl:<12} median {med if med is not None else float('nan'):8.2f} s"
              f"{mem}{fl}", flush=True)
    if setup.encoder_cache is not None:
        cache = setup.encoder_cache
        rows.get("metarag", {})["encoder_cache"] = {
            "mb": cache.nbytes / 2**20, "sources": len(cache), "hits": cache.hits,
            "misses": cache.misses}
        setup.encoder_cache = None  # the next configuration starts from an empty cache
    agreement = compare(warm)
    ratios: dict[str, Any] = {}
    peers = [i for i in impls if i not in OURS]
    for impl in (i for i in OURS if i in rows and peers):
        # "time_ratio"/"memory_ratio" are the warm metarag's; the cold one's are prefixed.
        prefix = "" if impl == "metarag" else "cold_"
        ours = rows[impl]
        for peer in peers:
            if ours["median_s"] and rows[peer]["median_s"]:
                ratios[f"time_{impl}_over_{peer}"] = ours["median_s"] / rows[peer]["median_s"]
            if memory:
                ratios[f"memory_{impl}_over_{peer}"] = ours["peak_mb"] / rows[peer]["peak_mb"]
        if all(rows[p]["median_s"] for p in peers) and ours["median_s"]:
            best = min(peers, key=lambda p: rows[p]["median_s"])
            ratios["best_peer_time"] = best
            ratios[prefix + "time_ratio"] = ours["median_s"] / rows[best]["median_s"]
        if memory:
            best_mem = min(peers, key=lambda p: rows[p]["peak_mb"])
            ratios["best_peer_memory"] = best_mem
            ratios[prefix + "memory_ratio"] = ours["peak_mb"] / rows[best_mem]["peak_mb"]
    print("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in ratios.items()), flush=True)
    print(f"  agreement: loss max |diff| {agreement['loss_max_abs_diff']:.2e}, meta-gradient "
          f"max relative diff {agreement['grad_max_rel_diff']:.2e}", flush=True)
    return {"model": setup.name, "order": order, "inner_steps": steps, "results": rows,
            "ratios": ratios, "agreement": agreement, "failed": failed}


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from metarag.meta.adapt import AdaptConfig
    from metarag.rag.model import RAGConfig

    defaults = AdaptConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "default"],
                        choices=["tiny", "default"])
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS),
                        choices=IMPLEMENTATIONS)
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--orders", nargs="+", default=["second", "first"],
                        choices=["second", "first"])
    parser.add_argument("--tasks", type=int, default=4, help="episodes per meta-batch")
    parser.add_argument("--shots", type=int, default=8, help="support examples per episode")
    parser.add_argument("--queries", type=int, default=8, help="query examples per episode")
    parser.add_argument("--k", type=int, default=RAGConfig().k, help="passages per question")
    # Lengths as in configs/train-synthetic.yaml.
    parser.add_argument("--query-max-length", type=int, default=48)
    parser.add_argument("--max-source-length", type=int, default=128)
    parser.add_argument("--max-target-length", type=int, default=24)
    parser.add_argument("--params", nargs="+", default=list(defaults.params),
                        help="adapted parameters (presets/patterns; AdaptConfig's by default)")
    parser.add_argument("--exclude", nargs="*", default=list(defaults.exclude))
    parser.add_argument("--inner-lr", type=float, default=defaults.lr)
    parser.add_argument("--repeats", type=int, default=3, help="timed meta-steps per "
                        "implementation, after one warm-up")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory profile")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared "
                        "2-core machine a second thread makes small ops wait ~8 ms each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="runs/cache", help="passage embedding cache")
    parser.add_argument("--hit-rate-steps", type=int, default=200, help="meta-batches "
                        "drawn to count repeated sources (0: skip)")
    parser.add_argument("--out", default="docs/benchmarks/meta_step.json")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="instead of running, merge "
                        "the JSON files of several invocations (in run order) into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return write_json(merge_results([json.loads(Path(p).read_text(encoding="utf-8"))
                                         for p in args.merge]), args.out)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ensure_peers(args.impls)
    import torch
    import transformers

    from metarag.generation.precision import cpu_name

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load = os.getloadavg()
    meta = {
        "command": "python benchmarks/meta_step.py " + " ".join(sys.argv[1:] if argv is None
                                                               else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "cpu": cpu_name(),
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "transformers": transformers.__version__,
        "higher": _version("higher"), "load_average_at_start": load,
    }
    print(f"machine: {meta['machine']} ({meta['cpu']}); torch {meta['torch']} "
          f"({meta['torch_threads']} threads); load average {load[0]:.1f}")
    peak = matmul_gflops(args.threads)
    print(f"matmul peak: {peak['gflops']:.1f} GFLOP/s ({peak['size']}^2 float32, "
          f"{args.threads} thread{'s' if args.threads > 1 else ''})")
    if os.cpu_count() and os.cpu_count() != args.threads:
        torch.set_num_threads(os.cpu_count())
        peak["all_cores"] = matmul_gflops(os.cpu_count())
        torch.set_num_threads(args.threads)
        print(f"  with all {os.cpu_count()} cores: {peak['all_cores']['gflops']:.1f} GFLOP/s")
    peak["bfloat16"] = matmul_gflops(args.threads, dtype="bfloat16")
    print(f"  bfloat16: {peak['bfloat16']['gflops']:.1f} GFLOP/s (the default model's products "
          "where the CPU has native bfloat16)")

    hit_rates = []
    if args.hit_rate_steps:
        # The benchmark's draw, then configs/meta-synthetic.yaml's (meta_batch 2, 4 + 4).
        for m, shots, queries, k, length in (
                (args.tasks, args.shots, args.queries, args.k, args.max_source_length),
                (2, 4, 4, 2, 144)):
            hit_rates.append(sampler_hit_rate(args.hit_rate_steps, m, shots, queries,
                                              args.seed, k=k, source_length=length))
            print(f"sampler: {hit_rates[-1]['summary']}", flush=True)

    configs = []
    setups = {}
    for name in args.models:
        setup = build_setup(name, args)
        setups[name] = setup.description
        print(f"\nmodel {name}: {setup.description['parameters_adapted']:,} of "
              f"{setup.description['parameters_total']:,} parameters adapted; tasks "
              f"{setup.description['tasks']}")
        for order in args.orders:
            for steps in args.inner_steps:
                configs.append(run_config(setup, steps, order == "first", list(args.impls),
                                          args.repeats, not args.no_memory, not args.no_flops))
        del setup
        gc.collect()

    for c in configs:  # achieved throughput, against the matmul peak of the model's dtype
        bf16 = setups[c["model"]]["compute_dtype"] == "torch.bfloat16"
        reference = peak["bfloat16"]["gflops"] if bf16 else peak["gflops"]
        for row in c["results"].values():
            if row.get("gflop") and row.get("median_s"):
                row["gflops_achieved"] = row["gflop"] / row["median_s"]
                row["fraction_of_matmul_peak"] = row["gflops_achieved"] / reference
    headline = {}
    for c in configs:
        if c["model"] == "default" and c["order"] == "second":
            headline[str(c["inner_steps"])] = {
                "time_ratio": c["ratios"].get("time_ratio"),
                "memory_ratio": c["ratios"].get("memory_ratio"),
                "cold_time_ratio": c["ratios"].get("cold_time_ratio"),
                "cold_memory_ratio": c["ratios"].get("cold_memory_ratio"),
                "best_peer_time": c["ratios"].get("best_peer_time"),
                "best_peer_memory": c["ratios"].get("best_peer_memory"),
                "loss_max_abs_diff": c["agreement"]["loss_max_abs_diff"],
                "grad_max_rel_diff": c["agreement"]["grad_max_rel_diff"]}
    meta["load_average_at_end"] = os.getloadavg()
    meta["wall_s"] = time.perf_counter() - started
    result = {"meta": meta, "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "matmul_peak": peak, "models": setups, "configs": configs,
              "second_order_default": _second_order_default(headline),
              "source_hit_rate": hit_rates}
    return write_json(result, args.out)


def _second_order_default(headline: dict[str, Any]) -> dict[str, Any] | None:
    """The issue's headline: second-order MAML on the default model, per inner-step count."""
    if not headline:
        return None
    # The meta-training default (MetaTrainConfig.inner.steps) is 1 inner step.
    key = "1" if "1" in headline else sorted(headline, key=int)[0]
    return {"inner_steps": int(key), **headline[key], "by_inner_steps": headline,
            "note": "time_ratio/memory_ratio: metarag with its encoder cache warm (the "
                    "meta-batch's sources seen in an earlier meta-step); cold_*: an empty "
                    "cache every meta-step"}


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several invocations (say, split to fit a session), in run order.

    A result that is itself a merge contributes its runs one by one. The matmul peak
    and the sampler's hit rates come from the first run that has them.
    """
    headline: dict[str, Any] = {}
    for r in results:
        headline.update((r.get("second_order_default") or {}).get("by_inner_steps", {}))
    runs = [m for r in results for m in r["meta"].get("runs", [r["meta"]])]
    settings = [s for r in results
                for s in (r["settings"] if isinstance(r["settings"], list) else [r["settings"]])]
    return {
        "meta": {**runs[0], "commands": [m["command"] for m in runs], "runs": runs,
                 "wall_s": sum(m.get("wall_s", 0.0) for m in runs),
                 "note": f"{len(runs)} invocations of benchmarks/meta_step.py, merged "
                         "(configs in run order)"},
        "settings": settings,
        "matmul_peak": results[0]["matmul_peak"],
        "models": {k: v for r in results for k, v in r["models"].items()},
        "configs": [c for r in results for c in r["configs"]],
        "second_order_default": _second_order_default(headline),
        "source_hit_rate": next((r["source_hit_rate"] for r in results
                                 if r["source_hit_rate"]), [])}


def write_json(result: dict[str, Any], path: str) -> dict[str, Any]:
    out = Path(path)
    if not out.is_absolute():
        out = REPO_ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    wall = result["meta"].get("wall_s")
    print(f"\nwrote {out}" + (f" ({wall:.0f} s)" if wall is not None else ""))
    return result


def sampler_hit_rate(steps: int, meta_batch: int, shots: int, queries: int, seed: int, *,
                     k: int, source_length: int, hidden: int = 384,
                     cache_bytes: int = 512 * 2**20) -> dict[str, Any]:
    """Of the questions ``steps`` meta-batches draw, the share whose sources are cached.

    With the retriever fixed a question brings back the same k sources, so a
    question seen in an earlier meta-step (and not yet evicted by the cache's byte
    bound, least recently used first, at ``k`` sources of ``source_length`` x
    ``hidden`` float32 each) is k encoder-cache hits. Retrieval that moves during
    meta-training lowers the rate.
    """
    from collections import OrderedDict

    from metarag.data.episodes import MetaBatchSampler
    from metarag.data.synthetic import synthetic_suite

    tasks = synthetic_suite()
    sampler = MetaBatchSampler(tasks, n_shot=shots, n_query=queries,
                               meta_batch_size=meta_batch, seed=seed)
    capacity = cache_bytes // (k * source_length * hidden * 4)  # questions the cache holds
    cached: OrderedDict[tuple[str, str], None] = OrderedDict()
    hits: list[float] = []  # per meta-step
    for _ in range(steps):
        batch = [(ep.task_name, x.question) for ep in sampler.sample()
                 for x in (*ep.support, *ep.query)]
        hits.append(sum(q in cached for q in batch) / len(batch))
        for q in batch:
            cached[q] = None
            cached.move_to_end(q)
        while len(cached) > capacity:
            cached.popitem(last=False)
    marks = [n for n in (10, 30, 60, 100, 200) if n <= steps]
    out = {"steps": steps, "meta_batch": meta_batch, "shots": shots, "queries": queries,
           "k": k, "source_length": source_length, "cache_mb": cache_bytes / 2**20,
           "capacity_questions": capacity, "train_questions": sum(len(t.train) for t in tasks),
           "hit_rate": sum(hits) / steps,
           "hit_rate_first": {str(n): sum(hits[:n]) / n for n in marks},
           "hit_rate_steps_before": {str(n): sum(hits[n - 10:n]) / 10 for n in marks}}
    out["summary"] = (f"meta-batches of {meta_batch} x ({shots} + {queries}), k={k}: cached "
                      + ", ".join(f"{v:.0%} over the first {n}"
                                  for n, v in out["hit_rate_first"].items())
                      + f" meta-steps; {out['hit_rate_steps_before'][str(marks[-1])]:.0%} in "
                      f"steps {marks[-1] - 9}-{marks[-1]}")
    return out


# The peers this benchmark installs into its own interpreter when they are missing
# (not in the lock file: only the benchmark needs them).
PEERS = {"higher": "higher==0.2.1"}


def ensure_peers(impls: list[str]) -> None:
    import importlib
    import subprocess

    for impl in impls:
        if impl not in PEERS:
            continue
        try:
            importlib.import_module(impl)
        except ImportError:
            print(f"installing {PEERS[impl]} (a peer of this benchmark) ...", flush=True)
            # --no-deps: its one dependency, torch, is the project's own (locked) one.
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            PEERS[impl]], check=True)
            importlib.invalidate_caches()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()

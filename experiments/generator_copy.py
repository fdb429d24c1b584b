"""Does a generator learn to copy the answer from its passage? (generator only, gold passage)

Trains one generator kind on the synthetic suite's train questions, each with its
gold passage (no retrieval), and scores greedy answers on every 6th dev question
every 100 steps. Used to choose the demo's generator (docs/RESULTS.md).

    python experiments/generator_copy.py --kind bert-lm --lr 3e-4 --steps 300 --batch-size 8
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from metarag.data.synthetic import synthetic_suite
from metarag.evaluation.metrics import score_answers
from metarag.generation.generator import Generator
from metarag.generation.prompt import format_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="bert-lm", help="bert2bert or bert-lm")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=100)
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = random.Random(0)
    tasks = synthetic_suite()
    with_gold = [(e, t.passage_lookup()[e.gold_passage_ids[0]]) for t in tasks for e in t.train]
    dev = [(e, t.passage_lookup()[e.gold_passage_ids[0]]) for t in tasks for e in t.dev][::6]
    gen = Generator.from_pretrained(args.kind, max_source_length=160, max_target_length=24)
    optimizer = torch.optim.AdamW(gen.parameters(), lr=args.lr)
    gen.train()
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = rng.sample(with_gold, args.batch_size)
        inputs = gen.tokenize([format_source(e.question, [p]) for e, p in batch],
                              [e.answers[0] for e, _ in batch])
        loss = gen.loss(inputs)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            answers = gen.generate([format_source(e.question, [p]) for e, p in dev],
                                   max_new_tokens=16)
            scores = score_answers(answers, [list(e.answers) for e, _ in dev])
            print(f"{args.kind} step {step} loss {loss.item():.3f} "
                  f"({time.perf_counter() - started:.0f} s): EM {scores['exact_match']:.1f} "
                  f"F1 {scores['f1']:.1f} ROUGE-L {scores['rougeL']:.1f}; e.g. {answers[:3]}",
                  flush=True)


if __name__ == "__main__":
    main()

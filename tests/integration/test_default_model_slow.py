"""The default model (MiniLM query encoder + BERT2BERT) end to end; `make test-slow`."""

import math

import pytest
import torch

from metarag.data.synthetic import synthetic_suite
from metarag.rag.build import ModelConfig, build_model
from metarag.rag.model import RAGConfig

pytestmark = pytest.mark.slow


def test_default_model_trains_and_answers_with_citations():
    task = synthetic_suite(seed=0, n_entities=12, questions_per_entity=2,
                           domains=["pharmacy"])[0]
    built = build_model(ModelConfig(max_source_length=96, max_target_length=16,
                                    rag=RAGConfig(k=2, max_new_tokens=8)))
    built.use_corpus(task.corpus)
    batch = task.train[:4]
    questions, answers = [e.question for e in batch], [e.answers[0] for e in batch]
    optimizer = torch.optim.AdamW(built.model.parameters(), lr=3e-4)
    losses = []
    for _ in range(6):  # the same batch: the loss must fall
        out = built.model(questions, answers)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    built.model.eval()
    [answer] = built.model.answer(questions[:1])
    assert isinstance(answer.answer, str) and len(answer.citations) == 2
    assert answer.citations[0].passage_id in task.passage_lookup()

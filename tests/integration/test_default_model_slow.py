"""The default model (MiniLM retriever + Gemma 3 270M with LoRA) end to end; `make test-slow`.

Loads the real 1 GB generator from the user cache (`make setup` converts it), so
it is marked slow: about a minute on 2 CPU cores.
"""

import math

import pytest
import torch

from metarag.data.schema import Passage
from metarag.generation.base import DEFAULT_GENERATOR
from metarag.meta.params import select_params
from metarag.rag.build import ModelConfig, build_model
from metarag.rag.model import RAGConfig

pytestmark = pytest.mark.slow

PASSAGES = [
    Passage("p0", "The Eiffel Tower is in Paris. It was finished in 1889.", "Eiffel Tower"),
    Passage("p1", "Mount Kilimanjaro is the highest mountain in Africa.", "Kilimanjaro"),
    Passage("p2", "The Danube flows through Vienna and Budapest.", "Danube"),
]


@pytest.fixture(scope="module")
def built():
    built = build_model(ModelConfig(max_source_length=128, max_target_length=16,
                                    rag=RAGConfig(k=2, max_new_tokens=8)))
    built.use_corpus(PASSAGES)
    return built


def test_the_default_generator_is_gemma_with_lora(built):
    generator = built.model.generator
    assert generator.kind == "causal" and generator.model.config.model_type.startswith("gemma3")
    assert generator.base_identity.startswith("sha256:a5fd3b62230aa5ec")
    assert DEFAULT_GENERATOR == "gemma-3-270m"
    lora = select_params(built.model, ["lora"])
    assert 0 < sum(dict(built.model.named_parameters())[n].numel() for n in lora) < 2_000_000


def test_untrained_gemma_answers_from_the_passage_and_cites_it(built):
    built.model.eval()
    [answer] = built.model.answer(["In which year was the Eiffel Tower finished?"])
    assert "1889" in answer.answer
    assert answer.citations[0].passage_id == "p0" and "\n" not in answer.answer


def test_lora_steps_lower_the_loss(built):
    model = built.model
    names = select_params(model, ["lora"])
    own = dict(model.named_parameters())
    optimizer = torch.optim.AdamW([own[n] for n in names], lr=1e-3)
    questions = ["Which is the highest mountain in Africa?", "Which river flows through Vienna?"]
    answers = ["Mount Kilimanjaro", "The Danube"]
    losses = []
    model.train()
    for _ in range(4):  # the same batch: the loss must fall
        loss = model(questions, answers).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses

"""No n-gram twice within an answer: the processor, and greedy decoding with it."""

import pytest
import torch
from transformers import AutoTokenizer

from metarag.generation import Generator
from metarag.generation.decoding import NoRepeatInAnswer
from metarag.retrieval.encoder import default_encoder_path

SOURCES = ["question: what dose? context: take 75 mg every 8 hours with food.",
           "question: when? context: it was founded in 1901 by a merchant."]


def test_only_the_answer_counts_not_the_prompt():
    ids = torch.tensor([[5, 6, 7, 5, 6]])  # prompt 5 6 7, answer so far 5 6
    scores = torch.zeros(1, 10)
    # From the answer on: "6 7" is in the prompt only, so 7 may follow 6.
    assert torch.isfinite(NoRepeatInAnswer(2, start=3)(ids, scores.clone())).all()
    # Counting the prompt (what transformers' no_repeat_ngram_size does), 7 is banned.
    banned = NoRepeatInAnswer(2, start=0)(ids, scores.clone())
    assert banned[0, 7] == float("-inf") and torch.isfinite(banned[0, :7]).all()
    # Unigrams: every answer token so far is banned.
    unigrams = NoRepeatInAnswer(1, start=3)(ids, scores.clone())
    assert torch.isinf(unigrams[0, [5, 6]]).all() and torch.isfinite(unigrams[0, 7])
    with pytest.raises(ValueError, match="n must be"):
        NoRepeatInAnswer(0)


@pytest.mark.parametrize("arch", ["t5", "gpt2"])  # an encoder-decoder and a decoder-only model
def test_greedy_answers_stop_looping(arch):
    gen = Generator.tiny(arch, AutoTokenizer.from_pretrained(default_encoder_path()))
    looping = gen.generate(SOURCES, max_new_tokens=12)
    assert any(len(set(a.split())) < len(a.split()) for a in looping)  # random weights loop
    answers = gen.generate(SOURCES, max_new_tokens=12, no_repeat_ngram=1)
    assert len(answers) == len(SOURCES)
    for answer in answers:
        words = answer.split()
        assert words and len(set(words)) == len(words), answer
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        gen.generate(SOURCES, no_repeat_ngram=-1)

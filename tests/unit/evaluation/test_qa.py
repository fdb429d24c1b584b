"""evaluate_qa on a tiny model: structure, counts, recall with predictable retrieval, edge cases.

Answer *values* are checked by hand in test_metrics.py; a tiny random generator
writes nonsense, so here only the shape and ranges of its scores matter.
Retrieval is made predictable by using the questions themselves as passages:
an untrained query encoder has the passage encoder's weights, so each question
lies closest to its own passage.
"""

import logging

import pytest

from helpers import TINY_KINDS, tiny_model
from metarag.config import from_dict
from metarag.data.schema import Passage, QAExample, Task
from metarag.errors import DataError
from metarag.evaluation.qa import (
    ANSWER_METRICS,
    answer_questions,
    evaluate_qa,
    markdown_report,
    save_results,
)
from metarag.rag.build import BuiltModel, ModelConfig, build_model
from metarag.rag.model import RAGConfig

QUESTIONS = [
    "What is the adult dose of Velazine?",
    "Which clause ends the Dunmore lease agreement early?",
    "How many hectares of barley did the farm plant in spring?",
    "Who chairs the audit committee of Norvell Bank?",
]


@pytest.fixture(scope="module", params=TINY_KINDS)
def built(tiny_encoder_dir, request) -> BuiltModel:
    model = tiny_model(request.param, max_source_length=48, max_target_length=12)
    config = from_dict(ModelConfig, {"encoder": str(tiny_encoder_dir), **model})
    config.rag = RAGConfig(k=2, max_new_tokens=3)
    return build_model(config)


def _task(questions=QUESTIONS, *, language="en", passages=None) -> Task:
    corpus = passages or [Passage(f"p{i}", q) for i, q in enumerate(questions)]
    # The last example has no gold passage: counted, never scored for recall.
    test = [QAExample(f"q{i}", q, (f"answer {i}",),
                      (f"p{i}",) if i < len(questions) - 1 else ())
            for i, q in enumerate(questions)]
    return Task("tiny", "test", language, corpus, train=[], dev=[], test=test).validate()


def test_metrics_counts_and_predictions(built):
    assert built.model.training  # fresh from build_model: the zero-shot baseline
    result = evaluate_qa(built, _task(), ks=(1, 2))
    assert built.model.training  # mode restored
    assert (result.task, result.split, result.n) == ("tiny", "test", 4)
    assert list(result.metrics) == [*ANSWER_METRICS, "recall@1", "recall@2", "mrr"]
    assert all(0.0 <= v <= 100.0 for v in result.metrics.values())
    # each question retrieves its own passage first
    assert result.metrics["recall@1"] == result.metrics["mrr"] == 100.0
    assert (result.retrieval_questions, result.no_gold, result.mrr_cutoff) == (3, 1, 2)
    assert result.seconds > 0 and result.answers_per_second > 0
    assert [p.id for p in result.predictions] == ["q0", "q1", "q2", "q3"]
    first = result.predictions[0]
    assert first.references == ["answer 0"] and first.gold_passage_ids == ["p0"]
    assert len(first.cited_passage_ids) == 2 and "p0" in first.cited_passage_ids
    # the cited passages themselves, for readers such as `metarag review`
    assert [p["id"] for p in first.passages] == first.cited_passage_ids
    assert {p["text"] for p in first.passages} <= set(QUESTIONS)
    assert "predictions" not in result.to_dict()


def test_in_context_demos_are_drawn_with_their_passages(built):
    task = _task()
    demos = [QAExample("d0", QUESTIONS[1], ("Clause 14.3",), ("p1",))]
    result = evaluate_qa(built, task, ks=(1,), in_context=1, demos=demos)
    assert built.model.demos == ()  # the model's own (none) are back
    # The same prompts by hand: the demo shows its gold passage from the task's corpus.
    built.use_corpus(task.corpus)
    with built.model.demos_while(demos):
        assert built.model.demos[0].context and QUESTIONS[1] in built.model.demos[0].context
        expected = answer_questions(built, [e.question for e in task.test])
    assert [p.prediction for p in result.predictions] == [a.answer for a in expected]


def test_max_examples_takes_the_first_n(built):
    result = evaluate_qa(built, _task(), max_examples=2, ks=(1,))
    assert result.n == 2 and [p.id for p in result.predictions] == ["q0", "q1"]


def test_no_gold_anywhere_leaves_recall_empty_and_report_renders(built, tmp_path):
    result = evaluate_qa(built, _task(QUESTIONS[:1]), ks=(1,))
    assert result.retrieval_questions == 0 and result.no_gold == 1
    assert result.metrics["recall@1"] is None and result.metrics["mrr"] is None
    table = markdown_report([result])
    assert table.splitlines()[0].startswith("| task | split | n | EM | F1 |")
    assert "| – | – |" in table
    paths = save_results([result], tmp_path, {"note": "x"})
    assert [p.name for p in paths] == ["metrics.json", "metrics.md", "predictions.jsonl"]
    assert len(paths[2].read_text().splitlines()) == 1


def test_unsupported_language_is_scored_as_english(built, caplog):
    with caplog.at_level(logging.WARNING, logger="metarag.evaluation.qa"):
        result = evaluate_qa(built, _task(QUESTIONS[:2], language="de"), ks=(1,))
    assert result.language == "en"
    assert any("not 'de'" in r.getMessage() for r in caplog.records)


def test_over_long_question_and_passage_are_truncated_with_a_warning(built, caplog):
    long_question = "What does the clause say about " + "rent arrears " * 150 + "?"
    long_passage = Passage("long", "The lease may end early. " * 200)
    task = _task([long_question, "Who signs?"], passages=[
        long_passage, Passage("p0", "short"), Passage("p1", "The tenant signs.")])
    with caplog.at_level(logging.WARNING):
        result = evaluate_qa(built, task, ks=(1,))
    assert result.n == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 of 2 questions exceed" in m for m in messages), messages
    assert any("1 of 3 passages exceed" in m for m in messages), messages


def test_empty_question_is_named(built):
    task = _task(["Who signs?", "   "])
    with pytest.raises(ValueError, match="question 'q1' is empty"):
        evaluate_qa(built, task)
    with pytest.raises(ValueError, match="question at position 0 is empty"):
        answer_questions(built, [""])


def test_empty_split_and_bad_arguments(built):
    with pytest.raises(DataError, match="split 'dev'.*no examples"):
        evaluate_qa(built, _task(), split="dev")
    with pytest.raises(ValueError, match="max_examples"):
        evaluate_qa(built, _task(), max_examples=0)
    with pytest.raises(ValueError, match="ks must be positive"):
        evaluate_qa(built, _task(), ks=(0, 1))


def test_answering_needs_a_corpus(tiny_encoder_dir):
    fresh = build_model(ModelConfig(encoder=str(tiny_encoder_dir), generator="tiny",
                                    max_source_length=48, max_target_length=12))
    with pytest.raises(ValueError, match="no corpus"):
        answer_questions(fresh, ["Who signs?"])

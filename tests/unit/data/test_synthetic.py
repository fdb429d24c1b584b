"""The synthetic suite: deterministic, valid, domain-specific answer styles, answers retrievable."""

from __future__ import annotations

import re
import time

import pytest

from metarag.data.synthetic import SYNTHETIC_DOMAINS, synthetic_suite

# One answer style per domain, written here independently of the generator.
STYLES = {
    "pharmacy": r"\d+ mg (once daily|twice daily|three times daily|every \d+ hours|at bedtime"
                r"|once weekly)",
    "finance": r"[€$£]\d+\.\d (million|billion)",
    "legal": r"clause \d+\.\d+",
    "history": r"\d{1,2} (January|February|March|April|May|June|July|August|September|October"
               r"|November|December) \d{4}",
    "agriculture": r"\d+\.\d tonnes per hectare",
    "electronics": r"[A-Z]{2}-\d{4}-[A-Z]",
    "astronomy": r"[\d,]+(\.\d+)? (days|light-years|kelvin|Earth masses|astronomical units)",
    "materials": r"-?[\d,]+ °C",
}


@pytest.fixture(scope="module")
def suite():
    return synthetic_suite(seed=0)


def _dump(tasks):
    return [(t.name, t.domain, t.corpus, t.train, t.dev, t.test) for t in tasks]


def test_at_least_six_domains_with_their_own_answer_style(suite) -> None:
    assert len(SYNTHETIC_DOMAINS) >= 6
    assert [t.name for t in suite] == [f"synthetic/{d}" for d in SYNTHETIC_DOMAINS]
    assert set(STYLES) == set(SYNTHETIC_DOMAINS)
    for task in suite:
        style = STYLES[task.name.split("/")[1]]
        for ex in task.examples:
            assert re.fullmatch(style, ex.answers[0]), (task.name, ex.answers[0])
        # ... and no other domain's style fits its answers (the styles really differ).
        others = [s for d, s in STYLES.items() if f"synthetic/{d}" != task.name]
        assert not any(re.fullmatch(s, task.train[0].answers[0]) for s in others)


def test_every_task_is_valid_and_sized(suite) -> None:
    for task in suite:
        task.validate()
        assert task.language == "en"
        assert len(task.corpus) == 60
        assert len(task.examples) == 60 * 3
        assert task.train and task.dev and task.test


def test_answer_occurs_exactly_once_in_its_gold_passage(suite) -> None:
    for task in suite:
        lookup = task.passage_lookup()
        for ex in task.examples:
            (gold,) = ex.gold_passage_ids
            passage = lookup[gold]
            assert passage.text.count(ex.answers[0]) == 1, (ex, passage.text)
            # The question names the entity the passage is about.
            assert passage.title in ex.question
            assert ex.answers[0] not in ex.question


def test_passages_describe_one_entity_with_several_facts(suite) -> None:
    for task in suite:
        style = STYLES[task.name.split("/")[1]]
        for p in task.corpus[:10]:
            assert p.title in p.text
            # Several facts of the same kind: distractors for answer extraction.
            assert len(re.findall(style, p.text)) >= 5, p.text
        titles = [p.title for p in task.corpus]
        assert len(set(titles)) == len(titles)


def test_questions_use_several_templates(suite) -> None:
    for task in suite:
        forms = {ex.question.replace(ex.metadata["entity"], "X") for ex in task.examples}
        assert len(forms) >= 8, task.name


def test_same_seed_same_tasks_other_seed_other_tasks() -> None:
    assert _dump(synthetic_suite(seed=3)) == _dump(synthetic_suite(seed=3))
    a, b = synthetic_suite(seed=3), synthetic_suite(seed=4)
    for ta, tb in zip(a, b, strict=True):
        assert [p.text for p in ta.corpus] != [p.text for p in tb.corpus]


def test_a_domain_does_not_depend_on_the_others_requested() -> None:
    alone = synthetic_suite(seed=1, domains=["legal"])
    together = synthetic_suite(seed=1, domains=["history", "legal"])
    assert _dump(alone) == _dump(together[1:])


def test_sizes_follow_the_arguments() -> None:
    (task,) = synthetic_suite(n_entities=7, questions_per_entity=5, domains=["astronomy"])
    assert len(task.corpus) == 7 and len(task.examples) == 35
    facts = {(ex.metadata["entity"], ex.metadata["fact"]) for ex in task.examples}
    assert len(facts) == 35  # each question about a different fact


@pytest.mark.parametrize("kwargs, match", [
    ({"domains": ["cooking"]}, "unknown synthetic domain"),
    ({"domains": ["legal", "legal"]}, "twice"),
    ({"n_entities": 0}, "n_entities"),
    ({"questions_per_entity": 6}, "questions_per_entity"),
])
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        synthetic_suite(**kwargs)


def test_fast() -> None:
    start = time.perf_counter()
    synthetic_suite(seed=0)
    assert time.perf_counter() - start < 1.0

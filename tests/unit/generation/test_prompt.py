"""Generator inputs: question first, passages after, per-passage variant."""

from __future__ import annotations

import pytest

from metarag.data.schema import Passage
from metarag.generation.prompt import (
    format_source,
    format_sources_per_passage,
    passage_as_context,
)

P1 = Passage(id="p1", text="It was founded in 673.", title="Ely Abbey")
P2 = Passage(id="p2", text="  The river Ouse runs past it. ")


def test_question_only_is_closed_book() -> None:
    assert format_source("Who  founded\nit?") == "question: Who founded it?"


def test_passages_follow_the_question_with_titles() -> None:
    assert format_source("Who founded it?", [P1, P2]) == (
        "question: Who founded it? context: Ely Abbey: It was founded in 673. "
        "The river Ouse runs past it."
    )


def test_strings_are_used_as_given_and_empty_ones_dropped() -> None:
    assert format_source("q", ["a: b", "  ", "c"]) == "question: q context: a: b c"


def test_max_passages_keeps_the_best_first() -> None:
    assert format_source("q", [P1, P2], max_passages=1) == format_source("q", [P1])
    assert format_source("q", [P1, P2], max_passages=0) == "question: q"
    with pytest.raises(ValueError, match="max_passages"):
        format_source("q", [P1], max_passages=-1)


def test_single_string_is_refused() -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        format_source("q", "a passage")
    with pytest.raises(TypeError, match="wrap it in a list"):
        format_sources_per_passage("q", "a passage")


def test_per_passage_sources() -> None:
    assert format_sources_per_passage("q", [P1, P2]) == [
        format_source("q", [P1]), format_source("q", [P2])]
    assert format_sources_per_passage("q", []) == []


def test_passage_without_title() -> None:
    assert passage_as_context(P2) == "The river Ouse runs past it."


def test_a_question_never_sees_its_own_demo() -> None:
    from metarag.generation.prompt import Demo, make_source

    demos = [Demo("Who founded  it?", "Etheldreda"), Demo("When?", "673")]
    assert make_source("Who founded it?", [P1], demos).demos == (demos[1],)
    assert make_source("Where?", [P1], demos).demos == tuple(demos)

"""Generator inputs: a question, its retrieved passages and in-context examples.

A `Source` holds the parts; each generator kind lays them out its own way:

- decoder-only LMs (Gemma, the default) read a prompt made for a base LM, demos
  first, then the passages, then the question, trimmed passage by passage to the
  token budget by `Generator.tokenize` (the question is never cut)::

      Context: <demo passage>
      Question: <demo question>
      Answer: <demo answer>

      Context: <title>: <passage 1>
      Context: <title>: <passage 2>
      Question: <question>
      Answer:

- encoder-decoder models read one string, question first (`format_source`), so that
  truncating from the end drops the last passage's tail, never the question.

The layout puts the question first so that truncating an over-long source (which
cuts from the end, see ``Generator.tokenize``) drops the last passage's tail, never
the question::

    question: Who founded the abbey? context: Abbey of Ely: It was founded in 673 ...

Two uses:

- RAG-token style / concatenation: one source with all k passages,
  ``format_source(q, passages)``.
- RAG-sequence and Fusion-in-Decoder: one source per passage,
  ``format_sources_per_passage(q, passages)``, so the generator scores the answer
  against each passage separately and the scores are marginalised (RAG-sequence)
  or fused (FiD).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metarag.data.schema import Passage

# What a decoder-only generator reads between the source and the answer it
# writes; seq2seq generators do not need it (the answer goes to the decoder).
CAUSAL_ANSWER_CUE = "answer:"


@dataclass(frozen=True)
class Demo:
    """An in-context example: a solved question, with the passage it was answered from."""

    question: str
    answer: str
    context: str = ""


@dataclass(frozen=True)
class Source:
    """Everything one generator input holds, before a kind lays it out.

    Attributes:
        question: The question.
        contexts: Passages as the generator sees them (`passage_as_context`), best first.
        demos: In-context examples, shown before the question (k-shot prompting).
    """

    question: str
    contexts: tuple[str, ...] = ()
    demos: tuple[Demo, ...] = ()

    def as_text(self) -> str:
        """The encoder-decoder layout: `format_source`, demos after the passages."""
        text = format_source(self.question, list(self.contexts))
        for demo in self.demos:
            text += f" example: question: {demo.question} answer: {demo.answer}"
        return text


def make_source(question: str, passages: Sequence[Passage | str] = (),
                demos: Sequence[Demo] = ()) -> Source:
    """A `Source` from a question, retrieved passages (best first) and demos."""
    if isinstance(passages, str):
        raise TypeError("passages must be a sequence of passages, got a single str; "
                        "wrap it in a list: [passage]")
    contexts = tuple(c for c in (passage_as_context(p) for p in passages) if c)
    return Source(" ".join(question.split()), contexts, tuple(demos))


def passage_as_context(passage: Passage | str) -> str:
    """One passage as the generator sees it: ``"title: text"``, or just the text.

    Args:
        passage: A :class:`~metarag.data.schema.Passage` or an already formatted string.
    """
    if isinstance(passage, str):
        return passage.strip()
    text = passage.text.strip()
    return f"{passage.title.strip()}: {text}" if passage.title.strip() else text


def format_source(question: str, passages: Sequence[Passage | str] = (), *,
                  max_passages: int | None = None) -> str:
    """One generator input from a question and (optionally) retrieved passages.

    Args:
        question: The question text.
        passages: Retrieved passages, best first; strings are used as they are.
        max_passages: Keep only the first this many passages (None keeps all).

    Returns:
        ``"question: {question} context: {p1} {p2} ..."``, or ``"question: {question}"``
        when there are no passages (closed-book).

    Raises:
        TypeError: When ``passages`` is a single string (wrap it in a list).
        ValueError: When ``max_passages`` is negative.
    """
    if isinstance(passages, str):
        raise TypeError("passages must be a sequence of passages, got a single str; "
                        "wrap it in a list: [passage]")
    if max_passages is not None:
        if max_passages < 0:
            raise ValueError(f"max_passages must be >= 0 or None, got {max_passages}")
        passages = passages[:max_passages]
    source = f"question: {' '.join(question.split())}"
    contexts = [c for c in (passage_as_context(p) for p in passages) if c]
    if contexts:
        source += " context: " + " ".join(contexts)
    return source


def format_sources_per_passage(question: str, passages: Sequence[Passage | str]) -> list[str]:
    """One source per passage, for RAG-sequence marginalisation and Fusion-in-Decoder.

    Args:
        question: The question text.
        passages: The k retrieved passages, best first.

    Returns:
        k strings, ``[format_source(question, [p]) for p in passages]``.
    """
    if isinstance(passages, str):
        raise TypeError("passages must be a sequence of passages, got a single str; "
                        "wrap it in a list: [passage]")
    return [format_source(question, [p]) for p in passages]

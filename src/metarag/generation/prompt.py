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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from metarag.data.schema import Passage

# What a decoder-only generator reads between the source and the answer it
# writes; seq2seq generators do not need it (the answer goes to the decoder).
CAUSAL_ANSWER_CUE = "answer:"
# A decoder-only prompt (`causal_prompt`): "Context: ...\nQuestion: ...\nAnswer:".
PROMPT_CONTEXT, PROMPT_QUESTION, PROMPT_ANSWER = "Context: ", "Question: ", "Answer:"
_MIN_CONTEXT_TOKENS = 8  # a passage cut shorter than this is dropped instead


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
    """A `Source` from a question, retrieved passages (best first) and demos.

    A demo of the question itself is left out: a prompt never shows its own answer
    (adapting on a support set that is also in the prompt, `AdaptConfig.in_context`).
    """
    if isinstance(passages, str):
        raise TypeError("passages must be a sequence of passages, got a single str; "
                        "wrap it in a list: [passage]")
    contexts = tuple(c for c in (passage_as_context(p) for p in passages) if c)
    question = " ".join(question.split())
    return Source(question, contexts,
                  tuple(d for d in demos if " ".join(d.question.split()) != question))


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


def causal_prompt(source: Source, ids: Callable[[str], list[int]], *, head: list[int],
                  budget: int, demo_context_tokens: int,
                  warn: Callable[[str, str], None]) -> list[int]:
    """A decoder-only prompt for a base LM as token ids, within ``budget`` tokens.

    Layout (module docstring): ``head`` (BOS, soft-prompt placeholders), demos,
    ``Context:`` lines, ``Question: ...``, ``Answer:``. The question and cue are kept
    whole; the passages take the room left, in order, the one that does not fit cut
    at its end and those after it dropped; demos fill what remains, each whole (its
    passage cut to ``demo_context_tokens``) or not at all.

    Args:
        source: The question, passages and demos.
        ids: Text -> token ids, without special tokens.
        head: Ids that open the prompt.
        budget: Most tokens in all (the generator's ``max_source_length``).
        demo_context_tokens: Most tokens of a demo's passage.
        warn: ``warn(key, message)``, called when something had to be cut.
    """
    question, cue = ids(f"{PROMPT_QUESTION}{source.question}\n"), ids(PROMPT_ANSWER)
    room = budget - len(head) - len(cue)
    if len(question) > room:
        warn("question", f"a question of {len(question)} tokens exceeds "
             f"max_source_length={budget}; its end was cut. Raise max_source_length.")
        question = question[:max(room, 0)]
    room -= len(question)
    newline = ids("\n")
    contexts: list[int] = []
    for context in source.contexts:
        line = ids(f"{PROMPT_CONTEXT}{context}\n")
        if len(line) > room:
            if room > len(newline) + _MIN_CONTEXT_TOKENS:
                contexts += line[:room - len(newline)] + newline
            warn("context", f"passages exceed the prompt's budget of max_source_length={budget} "
                 "tokens; they were cut passage by passage (the question is kept). Raise "
                 "max_source_length or retrieve fewer passages.")
            room = 0
            break
        contexts += line
        room -= len(line)
    demos: list[int] = []
    for n, demo in enumerate(source.demos):
        context = ids(f"{PROMPT_CONTEXT}{demo.context}")[:demo_context_tokens]
        shot = ((context + newline if demo.context else [])
                + ids(f"{PROMPT_QUESTION}{demo.question}\n{PROMPT_ANSWER} "
                      f"{' '.join(demo.answer.split())}\n\n"))
        if len(shot) > room:
            warn("demos", f"only {n} of {len(source.demos)} in-context examples fit "
                 f"max_source_length={budget} tokens; the rest were left out. Raise "
                 "max_source_length for more.")
            break
        demos += shot
        room -= len(shot)
    return head + demos + contexts + question + cue

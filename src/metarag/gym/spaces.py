"""The environment's spaces: text of any script, as `gymnasium.spaces.Text` defines text.

`Text` is a set of strings whose every character is in a finite ``charset``
(default: ASCII letters and digits, so not even a space) and whose length, in
characters, is within ``[min_length, max_length]``; ``contains`` checks both,
``sample`` draws characters uniformly from the set. QA text needs far more
than the default, so every text field here uses:

- ``CHARSET``: every code point of Unicode planes 0-3 except surrogates and
  control characters, tab, newline and carriage return kept. Plane 0 holds
  Chinese (CJK Unified Ideographs), the Latin, Greek and Cyrillic letters, the
  symbols of the data (€, °, ±) and the private-use characters COVID-QA's PDF
  extraction left in; plane 1 emoji and mathematical letters; planes 2-3 the
  rare Han characters of the CJK extensions (CMRC 2018 has a few). Code
  points, not the current Python's list of assigned characters, so the space
  does not change with the Unicode version. 260,033 characters.
- ``MAX_TEXT`` = 32,768 characters per field (``min_length`` 0): above every
  question, answer and passage of the 8 shared datasets (the longest, a MedQuAD
  answer, has 29,046). Observations are passed through `fit_text`, so they are
  always in the space.

Building a `Text` over 260k characters takes ~0.2 s (it indexes every
character), so one is built per process and each space is a shallow copy of it
with its own random generator (`text_space`); the tables it shares are never
written after construction.
"""

from __future__ import annotations

import copy
from functools import cache

from gymnasium import spaces

MAX_TEXT = 32_768
REPLACEMENT = "\ufffd"  # stands in for a character outside CHARSET


def _charset() -> str:
    keep = [range(0x20, 0x7F), range(0xA0, 0xD800), range(0xE000, 0x40000)]
    return "\t\n\r" + "".join(chr(c) for r in keep for c in r)


CHARSET: str = _charset()
_ALLOWED = frozenset(CHARSET)


@cache
def _template() -> spaces.Text:
    return spaces.Text(MAX_TEXT, min_length=0, charset=CHARSET)


def text_space() -> spaces.Text:
    """A fresh `Text(MAX_TEXT, min_length=0, charset=CHARSET)` with its own random generator."""
    space = copy.copy(_template())
    space.seed()  # a new generator: seeding or sampling one space never moves another
    return space


def fit_text(text: str) -> str:
    """``text`` cut to ``MAX_TEXT`` characters, each character outside CHARSET replaced by U+FFFD.

    The replacement is for control characters other than tab/newline/CR and code
    points above plane 3; none occurs in the shared datasets' questions or passages.
    """
    text = text[:MAX_TEXT]
    if _ALLOWED.issuperset(text):
        return text
    return "".join(c if c in _ALLOWED else REPLACEMENT for c in text)


def observation_space() -> spaces.Dict:
    """``{"task", "question", "passages", "support"}``; see `metarag.gym.env.FewShotQAEnv`."""
    return spaces.Dict({
        "task": text_space(),
        "question": text_space(),
        "passages": spaces.Sequence(text_space()),
        "support": spaces.Sequence(spaces.Dict({"question": text_space(),
                                                "answer": text_space()})),
    })


def action_space() -> spaces.Text:
    """The answer: one string (any text is scored; the space says what a sample looks like)."""
    return text_space()

"""Answer quality: exact match, token F1, BLEU, ROUGE-1/2/L and METEOR.

Every function takes `predictions` (one string per example) and `references`
(a list of acceptable answers per example) and reports on a 0-100 scale, so a
table of them reads alike: EM, F1, ROUGE and METEOR are means over examples of
per-example scores in [0, 1] times 100; BLEU is sacrebleu's corpus BLEU, which
is already 0-100. With several references an example takes its best one: the
max over references for EM, F1, ROUGE (per ROUGE type) and METEOR; BLEU pools
n-gram matches over all references, as multi-reference BLEU defines.

Languages:
    * "en": EM/F1 use SQuAD v1.1 normalisation (lower case, no punctuation, no
      articles a/an/the, single spaces); BLEU uses sacrebleu's "13a" tokeniser;
      ROUGE rouge-score's default tokeniser with the Porter stemmer; METEOR
      lower-cased word/punctuation tokens, Porter stems and WordNet synonyms.
    * "zh", "ja": scored by characters, as CMRC 2018's official script does:
      every non-space character is a token except that runs of ASCII letters
      and digits stay whole words ("用BERT模型" -> 用 BERT 模 型), so an English
      name inside Chinese text is not scored letter by letter. EM/F1 drop
      punctuation (ASCII and Unicode) but no articles. BLEU uses sacrebleu's
      "zh" tokeniser for Chinese (the WMT standard, comparable with published
      numbers); for Japanese the character tokens above with tokenize="none"
      (sacrebleu's "ja-mecab" would need MeCab). ROUGE gets the character
      tokens (rouge-score's default tokeniser deletes non-ASCII characters,
      so every Chinese pair would score 0). METEOR matches characters exactly:
      no stemming and no synonyms, since WordNet is English-only; it therefore
      does not need WordNet data.

Heavy libraries (sacrebleu, rouge-score, NLTK) are imported inside functions.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

#: Language codes accepted by every function here.
LANGUAGES = ("en", "zh", "ja")
#: Languages scored by characters.
_CHARACTER_LANGUAGES = ("zh", "ja")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)
# One ASCII word/number, or any other single non-space character.
_CHAR_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")
# METEOR's English tokens: words and single punctuation marks (NLTK's
# word_tokenize would need the punkt data, which is not available offline).
_WORD_TOKEN = re.compile(r"\w+|[^\w\s]")


# ---------------------------------------------------------------- validation


def _check(
    predictions: Sequence[str], references: Sequence[Sequence[str]], language: str
) -> None:
    """Raise ValueError on inputs no metric can score, naming the bad one."""
    if language not in LANGUAGES:
        raise ValueError(
            f"language={language!r} is not supported; use one of {', '.join(LANGUAGES)} "
            "(zh and ja are scored by characters)"
        )
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError(
            "predictions must be a list of strings and references a list of lists of "
            "strings, not a single string"
        )
    if not predictions:
        raise ValueError("no predictions to score: predictions is empty")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference lists; "
            "give one list of references per prediction"
        )
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            raise ValueError(
                f"references[{i}] is a string; wrap it in a list: [{refs!r}] "
                "(each example takes a list of acceptable answers)"
            )
        if not refs:
            raise ValueError(f"references[{i}] is empty; every example needs >= 1 reference")


# -------------------------------------------------------------- tokenisation


def character_tokens(text: str) -> list[str]:
    """Character tokens for Chinese/Japanese: runs of ASCII letters/digits stay whole.

    >>> character_tokens("用BERT模型, 2024年")
    ['用', 'BERT', '模', '型', ',', '2024', '年']
    """
    return _CHAR_TOKEN.findall(text)


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCT or unicodedata.category(char).startswith("P")


def normalize_answer(text: str, *, language: str = "en") -> list[str]:
    """Tokens of an answer after SQuAD-style normalisation, for EM and F1.

    English follows SQuAD v1.1's `normalize_answer`: lower case, remove ASCII
    punctuation, remove the articles a/an/the, split on whitespace. Chinese and
    Japanese: lower case, remove punctuation (ASCII and Unicode), then
    `character_tokens`.
    """
    text = text.lower()
    if language in _CHARACTER_LANGUAGES:
        return character_tokens("".join(c for c in text if not _is_punctuation(c)))
    text = "".join(c for c in text if c not in _ASCII_PUNCT)
    return _ARTICLES.sub(" ", text).split()


# ------------------------------------------------------------------- EM / F1


def _f1(prediction: list[str], reference: list[str]) -> float:
    """SQuAD token F1 of two normalised token lists."""
    if not prediction or not reference:
        # SQuAD v2.0's rule (v1.1 gives 0 here): two empty answers agree.
        return float(prediction == reference)
    common = sum((Counter(prediction) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def exact_match_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> list[float]:
    """Per-example exact match in {0, 1}: 1 if the normalised prediction equals any
    normalised reference."""
    _check(predictions, references, language)
    return [
        float(any(normalize_answer(p, language=language) == normalize_answer(r, language=language)
                  for r in refs))
        for p, refs in zip(predictions, references)
    ]


def exact_match(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> float:
    """Exact match after SQuAD normalisation, best reference per example, 0-100.

    Args:
        predictions: One answer per example.
        references: Acceptable answers per example (at least one each).
        language: "en", "zh" or "ja" (see the module docstring).

    Raises:
        ValueError: Unknown language, no predictions, or lengths that differ.
    """
    scores = exact_match_scores(predictions, references, language=language)
    return 100.0 * sum(scores) / len(scores)


def token_f1_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> list[float]:
    """Per-example SQuAD token F1 in [0, 1], max over references."""
    _check(predictions, references, language)
    out = []
    for p, refs in zip(predictions, references):
        pred = normalize_answer(p, language=language)
        out.append(max(_f1(pred, normalize_answer(r, language=language)) for r in refs))
    return out


def token_f1(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> float:
    """SQuAD token F1 (bag of normalised tokens), best reference per example, 0-100.

    Args:
        predictions: One answer per example.
        references: Acceptable answers per example (at least one each).
        language: "en", "zh" or "ja"; Chinese and Japanese count characters.

    Raises:
        ValueError: Unknown language, no predictions, or lengths that differ.
    """
    scores = token_f1_scores(predictions, references, language=language)
    return 100.0 * sum(scores) / len(scores)


# ---------------------------------------------------------------------- BLEU


def _bleu_inputs(
    predictions: Sequence[str], references: Sequence[Sequence[str]], language: str
) -> tuple[list[str], list[list[str]], str]:
    """Texts and sacrebleu tokeniser name for a language."""
    if language == "ja":
        # Pre-split into character tokens; sacrebleu then splits on spaces only.
        def join(text: str) -> str:
            return " ".join(character_tokens(text))

        return ([join(p) for p in predictions],
                [[join(r) for r in refs] for refs in references], "none")
    tokenize = "zh" if language == "zh" else "13a"
    return list(predictions), [list(refs) for refs in references], tokenize


def bleu(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> float:
    """Corpus BLEU-4 from sacrebleu (0-100), all references of an example pooled.

    sacrebleu wants one stream per reference position, so examples with fewer
    references are padded with None, which sacrebleu skips.

    Raises:
        ValueError: Unknown language, no predictions, or lengths that differ.
    """
    from sacrebleu.metrics import BLEU

    _check(predictions, references, language)
    hyps, refs, tokenize = _bleu_inputs(predictions, references, language)
    width = max(len(r) for r in refs)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(width)]
    return float(BLEU(tokenize=tokenize).corpus_score(hyps, streams).score)


def sentence_bleu(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> list[float]:
    """Per-example BLEU (0-100) from sacrebleu's `sentence_score`.

    Uses sacrebleu's sentence-level defaults: exponential smoothing and
    effective order (n-gram orders longer than the hypothesis are skipped), so
    short answers do not all score 0. Their mean is not corpus BLEU.

    Raises:
        ValueError: Unknown language, no predictions, or lengths that differ.
    """
    from sacrebleu.metrics import BLEU

    _check(predictions, references, language)
    hyps, refs, tokenize = _bleu_inputs(predictions, references, language)
    metric = BLEU(tokenize=tokenize, effective_order=True)
    return [float(metric.sentence_score(h, r).score) for h, r in zip(hyps, refs)]


# --------------------------------------------------------------------- ROUGE


class _CharacterTokenizer:
    """rouge-score tokenizer (an object with `tokenize`) for character languages."""

    def tokenize(self, text: str) -> list[str]:
        return character_tokens(text.lower())


def rouge_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F-measures in [0, 1], each the max over references."""
    from rouge_score.rouge_scorer import RougeScorer

    _check(predictions, references, language)
    if language in _CHARACTER_LANGUAGES:
        scorer = RougeScorer(list(ROUGE_TYPES), tokenizer=_CharacterTokenizer())
    else:
        scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    out: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for p, refs in zip(predictions, references):
        # score_multi keeps, per ROUGE type, the reference with the best F-measure.
        best = scorer.score_multi(list(refs), p)
        for t in ROUGE_TYPES:
            out[t].append(best[t].fmeasure)
    return out


def rouge(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measure from rouge-score, 0-100.

    Each example takes its best reference per ROUGE type; the result is the
    mean over examples. English uses the Porter stemmer; Chinese and Japanese
    use character tokens (see the module docstring).

    Returns:
        {"rouge1": ..., "rouge2": ..., "rougeL": ...}.

    Raises:
        ValueError: Unknown language, no predictions, or lengths that differ.
    """
    per_example = rouge_scores(predictions, references, language=language)
    return {t: 100.0 * sum(v) / len(v) for t, v in per_example.items()}


# -------------------------------------------------------------------- METEOR


class _NoSynonyms:
    """Stands in for NLTK's WordNet reader where synonyms do not apply (zh, ja)."""

    def synsets(self, word: str) -> list[Any]:
        return []


class _NoStemmer:
    """Stands in for the Porter stemmer where stemming does not apply (zh, ja)."""

    def stem(self, word: str) -> str:
        return word


@cache
def _english_wordnet() -> Any:
    """NLTK's WordNet reader, made available first (raises WordNetUnavailableError)."""
    from nltk.corpus import wordnet

    from metarag.evaluation.wordnet import ensure_wordnet

    ensure_wordnet()
    return wordnet


def meteor_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> list[float]:
    """Per-example METEOR in [0, 1] from NLTK, max over references."""
    from nltk.translate.meteor_score import meteor_score

    _check(predictions, references, language)
    tokenize: Callable[[str], list[str]]
    if language in _CHARACTER_LANGUAGES:
        tokenize = character_tokens
        extra: dict[str, Any] = {"stemmer": _NoStemmer(), "wordnet": _NoSynonyms()}
    else:
        def tokenize(text: str) -> list[str]:
            return _WORD_TOKEN.findall(text)

        extra = {"wordnet": _english_wordnet()}
    # nltk's meteor_score takes all references of an example and returns the max.
    return [
        float(meteor_score([tokenize(r) for r in refs], tokenize(p), **extra))
        for p, refs in zip(predictions, references)
    ]


def meteor(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> float:
    """METEOR (NLTK's `meteor_score`, default alpha/beta/gamma), 0-100.

    English matches exact words, then Porter stems, then WordNet synonyms;
    WordNet is found or built by `metarag.evaluation.wordnet.ensure_wordnet`.
    As in NLTK, synonyms are looked up for the *stems* left unmatched, so a word
    Porter changes misses its synonyms (large -> "larg" does not match "big";
    car/auto do match); kept as is for parity with NLTK.
    Chinese and Japanese match characters exactly (no WordNet needed).

    Raises:
        ValueError: Unknown language, no predictions, or lengths that differ.
        WordNetUnavailableError: English, and WordNet cannot be set up; the
            message says how to install it.
    """
    scores = meteor_scores(predictions, references, language=language)
    return 100.0 * sum(scores) / len(scores)


# ----------------------------------------------------------------------- all


def score_answers(
    predictions: Sequence[str], references: Sequence[Sequence[str]], *, language: str = "en"
) -> dict[str, float]:
    """All answer metrics at once, each on a 0-100 scale.

    Args:
        predictions: One generated answer per example.
        references: Acceptable answers per example (at least one each).
        language: "en", "zh" or "ja".

    Returns:
        {"exact_match", "f1", "bleu", "rouge1", "rouge2", "rougeL", "meteor"}
        -> score in [0, 100].

    Raises:
        ValueError: Unknown language, no predictions, or lengths that differ.
        WordNetUnavailableError: English METEOR without WordNet (see `meteor`).
    """
    _check(predictions, references, language)
    return {
        "exact_match": exact_match(predictions, references, language=language),
        "f1": token_f1(predictions, references, language=language),
        "bleu": bleu(predictions, references, language=language),
        **rouge(predictions, references, language=language),
        "meteor": meteor(predictions, references, language=language),
    }

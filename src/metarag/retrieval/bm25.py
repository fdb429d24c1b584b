"""BM25 sparse retrieval on bm25s, with a tokenizer per language.

The sparse baseline every dense result is compared with, and the second run in
hybrid fusion. BM25 (Robertson & Zaragoza 2009, Lucene variant, k1=1.5, b=0.75)
scores a passage by the query words it shares, weighted by their rarity.

Tokenisation (``tokenize``):

- "en": lowercase words, English stopwords removed, Snowball-stemmed (PyStemmer),
  so "plants" matches "plant".
- "zh": Chinese has no spaces, so every run of Han characters becomes its
  character unigrams and bigrams (the standard word-segmenter-free baseline);
  Latin words and numbers inside Chinese text become lowercase words.
- anything else: lowercase words, no stemming.

A passage that shares no token with the query scores 0 and is not returned, so
a query with no known token gets an empty hit list.

On disk: bm25s's own files (numpy arrays written with ``allow_pickle=False`` and
JSON; no pickle), ``passages.jsonl`` and ``bm25.json``, written last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from metarag.data.io import read_json, require
from metarag.data.schema import Passage
from metarag.errors import DataError
from metarag.retrieval.hits import Hits
from metarag.retrieval.passages import check_passages, passage_text, read_passages, write_passages

META_FILE, PASSAGES_FILE = "bm25.json", "passages.jsonl"
FORMAT, FORMAT_VERSION = "metarag.bm25_index", 1

_WORD = re.compile(r"\w+")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK unified ideographs (+ ext. A, compat.)
_ZH_TOKEN = re.compile(rf"[{_HAN}]+|[^\W{_HAN}]+")
_HAN_RUN = re.compile(rf"[{_HAN}]+")


def normalise_language(language: str) -> str:
    """"en-US" -> "en", "zh_CN" -> "zh": the part of a language tag the tokenizer cares about."""
    return re.split(r"[-_]", language.strip().lower())[0] or "en"


def tokenize(text: str, language: str = "en") -> list[str]:
    """Split text into BM25 terms for a language (see the module docstring)."""
    return _tokenizer(normalise_language(language))(text)


@cache
def _tokenizer(language: str) -> Callable[[str], list[str]]:
    if language == "en":
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        stemmer = Stemmer.Stemmer("english")
        stop = frozenset(STOPWORDS_EN)

        def english(text: str) -> list[str]:
            return stemmer.stemWords([w for w in _WORD.findall(text.lower()) if w not in stop])

        return english
    if language == "zh":
        def chinese(text: str) -> list[str]:
            out: list[str] = []
            for run in _ZH_TOKEN.findall(text.lower()):
                if _HAN_RUN.fullmatch(run):
                    out.extend(run)  # unigrams
                    out.extend(run[i:i + 2] for i in range(len(run) - 1))  # bigrams
                else:
                    out.append(run)
            return out

        return chinese

    def words(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    return words


class BM25Index:
    """A BM25 index over passages.

    Attributes:
        passages: The indexed passages; bm25s document i is ``passages[i]``.
        model: The ``bm25s.BM25`` object.
        language: Normalised language code that picked the tokenizer.
    """

    def __init__(self, passages: list[Passage], model: Any, *, language: str) -> None:
        self.passages = passages
        self.model = model
        self.language = language

    @classmethod
    def build(cls, passages: Sequence[Passage], language: str = "en", *, k1: float = 1.5,
              b: float = 0.75, show_progress: bool = False) -> BM25Index:
        """Tokenise passages (as :func:`passage_text`) and index them.

        Args:
            passages: The corpus; ids must be unique.
            language: ISO 639-1 code choosing the tokenizer ("en", "zh", others).
            k1: Term-frequency saturation.
            b: Length normalisation strength.
            show_progress: Show bm25s's progress bars.

        Raises:
            ValueError: Empty corpus, duplicate ids, or no passage has any token.
        """
        import bm25s

        passages = check_passages(passages)
        language = normalise_language(language)
        corpus_tokens = [tokenize(passage_text(p), language) for p in passages]
        if not any(corpus_tokens):
            raise ValueError(f"no passage has a single {language!r} token to index; check the "
                             "corpus text and the language")
        model = bm25s.BM25(k1=k1, b=b)
        model.index(corpus_tokens, show_progress=show_progress)
        return cls(passages, model, language=language)

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, questions: Sequence[str], k: int) -> Hits:
        """The k highest-scoring passages for each question (fewer if fewer share a term).

        Returns:
            Hits with ``method="bm25"``; scores are BM25 scores, all positive.
        """
        if isinstance(questions, str):
            raise TypeError("search expects a list of questions, got a single str; wrap it: [q]")
        vocab = self.model.vocab_dict
        k = min(int(k), len(self.passages))
        all_ids: list[list[str]] = []
        all_scores: list[list[float]] = []
        for question in questions:
            terms = [vocab[t] for t in tokenize(question, self.language) if t in vocab]
            if not terms or k <= 0:
                all_ids.append([])
                all_scores.append([])
                continue
            scores = self.model.get_scores_from_ids(terms)  # (N,)
            top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
            # Sort by score, then by corpus position so ties are deterministic.
            top = top[np.lexsort((top, -scores[top]))]
            top = top[scores[top] > 0]
            all_ids.append([self.passages[i].id for i in top.tolist()])
            all_scores.append(scores[top].astype(float).tolist())
        return Hits(all_ids, all_scores, "bm25")

    def save(self, directory: str | Path) -> Path:
        """Write bm25s's files, ``passages.jsonl`` and ``bm25.json`` (last) into a directory."""
        import bm25s

        import metarag

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".bm25-tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            self.model.save(str(staging), corpus=None, allow_pickle=False, show_progress=False)
            write_passages(self.passages, staging / PASSAGES_FILE)
            files = {path.name: path.stat().st_size for path in sorted(staging.iterdir())}
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "language": self.language,
                "count": len(self.passages),
                "files": files,
                "metarag_version": metarag.__version__,
                "bm25s_version": bm25s.__version__,
            }
            (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            for name in [*files, META_FILE]:
                os.replace(staging / name, directory / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> BM25Index:
        """Reopen a saved BM25 index.

        Raises:
            DataError: A file is missing, corrupt or inconsistent with ``bm25.json``.
        """
        import bm25s

        directory = Path(directory)
        meta_path = directory / META_FILE
        if not directory.is_dir():
            raise DataError(directory, None, "BM25 index directory not found; build one with "
                            "BM25Index.build(passages).save(dir)")
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(meta_path, None, f"not a metarag BM25 index (expected "
                            f"\"format\": \"{FORMAT}\")")
        language = require(meta, "language", meta_path, "$", str)
        count = require(meta, "count", meta_path, "$", int)
        files = require(meta, "files", meta_path, "$", dict)
        for name, size in files.items():
            path = directory / name
            if not path.is_file():
                raise DataError(path, None, "file not found; the BM25 index directory is "
                                "incomplete, rebuild it")
            if path.stat().st_size != size:
                raise DataError(path, None, f"{path.stat().st_size} bytes but {META_FILE} records "
                                f"{size}: the file was replaced or a save was interrupted; "
                                "rebuild the index")
        try:
            model = bm25s.BM25.load(str(directory), load_corpus=False, allow_pickle=False,
                                    show_progress=False)
        except (ValueError, OSError, KeyError, json.JSONDecodeError) as err:
            raise DataError(directory, None, f"bm25s could not read its files ({err}); rebuild "
                            "the index") from None
        passages = read_passages(directory / PASSAGES_FILE)
        if len(passages) != count or int(model.scores["num_docs"]) != count:
            raise DataError(directory, None, f"{len(passages)} passages and "
                            f"{model.scores['num_docs']} BM25 documents, but {META_FILE} says "
                            f"{count}; rebuild the index")
        return cls(passages, model, language=language)

    def __repr__(self) -> str:
        return f"BM25Index(passages={len(self)}, language={self.language!r})"

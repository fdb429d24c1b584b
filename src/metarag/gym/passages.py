"""The passages shown with each question: none, the gold ones, or BM25's top k.

Optional and deliberately simple. ``"gold"`` is oracle retrieval (reading
comprehension: does the agent find the answer in the right passage?);
``"bm25"`` is a realistic, fixed retriever (`metarag.retrieval.BM25Index` over
the task's corpus, in the task's language); None leaves retrieval to the agent,
which gets the corpus in the reset ``info``.
"""

from __future__ import annotations

from typing import Any

from metarag.data.schema import Passage, QAExample, Task

PASSAGE_MODES = (None, "gold", "bm25")


class PassageSource:
    """Passages for a question of a task, as texts (``"title: text"``, `passage_text`).

    Per-task lookups and BM25 indexes are built on first use and kept.

    Args:
        mode: One of `PASSAGE_MODES`.
        k: Passages per question for "bm25"; "gold" gives every gold passage.

    Raises:
        ValueError: Unknown ``mode`` or ``k < 1``.
    """

    def __init__(self, mode: str | None, k: int = 3) -> None:
        if mode not in PASSAGE_MODES:
            raise ValueError(f"passages must be one of {PASSAGE_MODES}, got {mode!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1 passages per question, got {k}")
        self.mode, self.k = mode, k
        self._lookup: dict[str, dict[str, Passage]] = {}
        self._bm25: dict[str, Any] = {}  # task name -> BM25Index

    def __call__(self, task: Task, example: QAExample) -> tuple[str, ...]:
        from metarag.retrieval.passages import passage_text

        if self.mode is None:
            return ()
        lookup = self._lookup.get(task.name)
        if lookup is None:
            lookup = self._lookup[task.name] = task.passage_lookup()
        if self.mode == "gold":
            ids = list(example.gold_passage_ids)
        else:
            ids = self._index(task).search([example.question], self.k).ids[0]
        return tuple(passage_text(lookup[i]) for i in ids if i in lookup)

    def _index(self, task: Task) -> Any:
        index = self._bm25.get(task.name)
        if index is None:
            from metarag.retrieval import BM25Index

            index = self._bm25[task.name] = BM25Index.build(task.corpus, language=task.language)
        return index

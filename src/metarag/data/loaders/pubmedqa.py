"""PubMedQA (PQA-L): ``ori_pqal.json``, a JSON object keyed by PMID.

Each abstract is one document: its ``CONTEXTS`` sections joined one per line,
each led by its ``LABELS`` name ("BACKGROUND: ..."), chunked when long. The
reference answer is ``LONG_ANSWER`` (the abstract's conclusion, which is not
among the contexts, so it is free-form); its gold passages are all chunks of
the abstract. ``final_decision`` (yes/no/maybe), ``YEAR`` and ``MESHES`` go to
the example's metadata.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from metarag.data.chunking import chunk_document
from metarag.data.io import read_json, require
from metarag.data.schema import Passage, QAExample, Task
from metarag.data.splits import make_splits
from metarag.errors import DataError

DATA_FILE = "ori_pqal.json"
TEST_FILE = "test_ground_truth.json"
DECISIONS = ("yes", "no", "maybe")
SKIP_EMPTY = "empty QUESTION or LONG_ANSWER"


def load_pubmedqa(
    path: Path,
    *,
    seed: int = 0,
    max_tokens: int = 150,
    overlap: int = 30,
    name: str = "pubmedqa",
    domain: str = "biomedical (research abstracts)",
) -> Task:
    """Load PubMedQA from a folder holding ``ori_pqal.json``.

    Args:
        path: The folder. If it also holds ``test_ground_truth.json``, the PMIDs
            listed there are the test split (the official 500); otherwise test
            is cut from the pool like dev.
        seed: Split seed for the pool.
        max_tokens, overlap: Chunking of abstracts.
        name, domain: Task labels.

    Raises:
        DataError: Missing or malformed file or field, a test PMID that is not
            in the data, or an empty file.
    """
    path = Path(path)
    data_file = path / DATA_FILE
    records = read_json(data_file)
    if not isinstance(records, dict):
        raise DataError(data_file, "the top level",
                        f"expected an object keyed by PMID, got {type(records).__name__}")
    if not records:
        raise DataError(data_file, "the top level", "no abstracts: the corpus would be empty")
    corpus: list[Passage] = []
    examples: dict[str, QAExample] = {}
    skipped: Counter[str] = Counter()
    for pmid, record in records.items():
        at = f"[{pmid!r}]"
        contexts = require(record, "CONTEXTS", data_file, at, list)
        labels = require(record, "LABELS", data_file, at, list)
        if len(labels) != len(contexts):
            raise DataError(data_file, f"{at}.LABELS",
                            f"{len(labels)} labels for {len(contexts)} CONTEXTS; "
                            "each context section needs one label")
        sections = []
        for i, (label, context) in enumerate(zip(labels, contexts, strict=True)):
            if not isinstance(label, str) or not isinstance(context, str):
                raise DataError(data_file, f"{at}.CONTEXTS[{i}]",
                                "context sections and their LABELS must be strings")
            sections.append(f"{label}: {context}" if label else context)
        passages = chunk_document(pmid, "\n".join(sections), source=pmid,
                                  max_tokens=max_tokens, overlap=overlap)
        if not passages:
            raise DataError(data_file, f"{at}.CONTEXTS", "the abstract has no text")
        decision = require(record, "final_decision", data_file, at, str)
        if decision not in DECISIONS:
            raise DataError(data_file, f"{at}.final_decision",
                            f"expected one of {', '.join(DECISIONS)}, got {decision!r}")
        corpus.extend(passages)
        question = require(record, "QUESTION", data_file, at, str).strip()
        answer = require(record, "LONG_ANSWER", data_file, at, str).strip()
        if not question or not answer:
            skipped[SKIP_EMPTY] += 1
            continue
        examples[pmid] = QAExample(
            id=pmid,
            question=question,
            answers=(answer,),
            gold_passage_ids=tuple(p.id for p in passages),
            metadata={
                "final_decision": decision,
                "year": record.get("YEAR"),
                "meshes": list(record.get("MESHES") or []),
            },
        )
    test_ids = _test_ids(path / TEST_FILE, records, examples)
    pool = [ex for pmid, ex in examples.items() if pmid not in test_ids]
    source_test = [examples[pmid] for pmid in test_ids]
    train, dev, test = make_splits(pool, source_test, seed=seed)
    task = Task(name, domain, "en", corpus, train, dev, test, dict(skipped))
    return task.validate(source=data_file)


def _test_ids(test_file: Path, records: dict[str, Any],
              examples: dict[str, QAExample]) -> list[str]:
    """The PMIDs of the official test split, in file order; [] if there is no such file."""
    if not test_file.exists():
        return []
    truth = read_json(test_file)
    if not isinstance(truth, dict):
        raise DataError(test_file, "the top level",
                        f"expected an object mapping PMID to decision, got {type(truth).__name__}")
    missing = [pmid for pmid in truth if pmid not in records]
    if missing:
        raise DataError(test_file, f"[{missing[0]!r}]",
                        f"{len(missing)} test PMIDs are not in {DATA_FILE}; "
                        "use the test file that comes with this data")
    # A test abstract skipped for an empty answer is counted in Task.skipped.
    return [pmid for pmid in truth if pmid in examples]

"""Hugging Face `datasets` in SQuAD style: a folder saved with `save_to_disk`, or a Hub name.

Columns expected (SQuAD v1.1 on the Hub): ``question``, ``context``,
``answers`` = ``{"text": [...], "answer_start": [...]}``, and optionally ``id``
(generated as ``"<split>-<row>"`` when absent) and ``title``.

- Corpus: each distinct context becomes one passage whose id is a hash of its
  text (``"ctx-<12 hex>"``), so ids are stable across splits, runs and
  machines. Gold passage of an example = the passage of its context.
- Examples with no answer text (SQuAD 2.0 "unanswerable") are dropped and
  counted in ``Task.skipped``.
- Splits: ``train`` -> train, ``validation``/``dev`` -> dev, ``test`` -> test.
  A missing dev or test is carved from train by `make_splits`; a dataset with
  a single split (or a plain `Dataset`) is split entirely by `make_splits`.

`datasets` is an optional extra (``pip install metarag[hf]``), imported only here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metarag.data.loaders.user import check_language
from metarag.data.schema import Passage, QAExample, Task
from metarag.data.splits import DEV_FRACTION, make_splits
from metarag.errors import DataError

REQUIRED_COLUMNS = ("question", "context", "answers")
SPLIT_NAMES = {"train": "train", "validation": "dev", "valid": "dev", "dev": "dev",
               "test": "test"}
UNANSWERABLE = "no answer text (unanswerable question)"


def load_hf_task(
    path_or_name: str,
    *,
    seed: int = 0,
    name: str | None = None,
    domain: str = "unknown",
    language: str = "en",
    config: str | None = None,
) -> Task:
    """Load a SQuAD-style Hugging Face dataset as a Task.

    Args:
        path_or_name: A folder written by ``Dataset(Dict).save_to_disk`` (loads
            offline), any other local folder of data files, or a Hub dataset
            name (needs a network connection).
        seed: Seeds the splits that have to be carved out.
        name: Task name; defaults to the folder name or the Hub name.
        domain: Human-readable domain of the task.
        language: ISO 639-1 code of questions and passages.
        config: Hub configuration name (``load_dataset(path, config)``), if any.

    Returns:
        A validated Task.

    Raises:
        ImportError: `datasets` is not installed.
        DataError: The dataset cannot be found or lacks the SQuAD columns.
    """
    try:
        import datasets
    except ImportError as err:
        raise ImportError("loading Hugging Face datasets needs the optional extra: "
                          "pip install 'metarag[hf]'") from err
    language = check_language(language, path_or_name, "argument 'language'")
    data = _load(datasets, path_or_name, config)
    if isinstance(data, datasets.Dataset):
        parts = {"": data}
    elif isinstance(data, datasets.DatasetDict):
        parts = dict(data)
    else:
        raise DataError(path_or_name, None,
                        f"expected a Dataset or DatasetDict, got {type(data).__name__} "
                        "(streaming datasets are not supported)")

    passages: dict[str, Passage] = {}
    skipped = {UNANSWERABLE: 0}
    by_split: dict[str, list[QAExample]] = {}
    for split, ds in parts.items():
        role = "" if len(parts) == 1 else SPLIT_NAMES.get(split.lower())
        if role is None:
            raise DataError(path_or_name, f"split {split!r}",
                            f"unknown split name; found splits {sorted(parts)}, expected train, "
                            "validation (or dev) and test")
        if role in by_split:
            raise DataError(path_or_name, f"split {split!r}",
                            f"two splits map to {role!r}: {sorted(parts)}")
        by_split[role] = _examples(ds, path_or_name, split, language, passages, skipped)

    train, dev, test = _assign(by_split, seed)
    task = Task(
        name=name or (Path(path_or_name).name if Path(path_or_name).is_dir() else path_or_name),
        domain=domain, language=language, corpus=list(passages.values()),
        train=train, dev=dev, test=test,
        skipped={k: v for k, v in skipped.items() if v},
    )
    return task.validate(source=path_or_name)


def _load(datasets: Any, path_or_name: str, config: str | None) -> Any:
    path = Path(path_or_name).expanduser()
    if path.is_dir() and ((path / "dataset_dict.json").is_file()
                          or (path / "state.json").is_file()):
        return datasets.load_from_disk(str(path))
    if not path.exists() and path_or_name.startswith(("/", ".", "~")):
        raise DataError(path_or_name, None, "no such folder")
    try:
        return datasets.load_dataset(str(path) if path.exists() else path_or_name, config)
    except Exception as err:  # DatasetNotFoundError, ConnectionError, FileNotFoundError...
        raise DataError(
            path_or_name, None,
            f"datasets.load_dataset failed ({type(err).__name__}: {err}). It is not a folder "
            "saved with save_to_disk, and the Hub does not have it or cannot be reached from "
            "this machine. Offline, pass the path of a folder saved with "
            "`dataset.save_to_disk(path)` (set HF_HUB_OFFLINE=1 to skip the network retries)",
        ) from err


def _examples(ds: Any, source: str, split: str, language: str,
              passages: dict[str, Passage], skipped: dict[str, int]) -> list[QAExample]:
    """Turn one split into examples, adding its contexts to ``passages`` (keyed by id)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(source, f"split {split!r}",
                        f"missing column(s) {missing}; found columns {ds.column_names}. "
                        "Expected SQuAD-style columns: id, question, context, "
                        "answers {text, answer_start}, optional title")
    columns = ds.column_names
    n = len(ds)
    ids = ds["id"] if "id" in columns else [f"{split or 'row'}-{i}" for i in range(n)]
    titles = ds["title"] if "title" in columns else [""] * n
    examples = []
    for i, (qid, question, context, answers, title) in enumerate(
            zip(ids, ds["question"], ds["context"], ds["answers"], titles, strict=True)):
        where = f"split {split!r}, row {i}"
        texts = _answer_texts(answers, source, where)
        if not texts:
            skipped[UNANSWERABLE] += 1
            continue
        if not isinstance(question, str) or not question.strip():
            raise DataError(source, f"{where}, column 'question'", "empty question")
        if not isinstance(context, str) or not context.strip():
            raise DataError(source, f"{where}, column 'context'", "empty context")
        pid = "ctx-" + hashlib.sha1(context.encode("utf-8")).hexdigest()[:12]
        passages.setdefault(pid, Passage(id=pid, text=context, title=title or "", source=source))
        examples.append(QAExample(id=str(qid), question=question.strip(), answers=texts,
                                  gold_passage_ids=(pid,), language=language,
                                  metadata={"hf_split": split} if split else {}))
    return examples


def _answer_texts(answers: Any, source: str, where: str) -> tuple[str, ...]:
    """SQuAD's {"text": [...], ...}; a plain string or list of strings is accepted too."""
    texts = answers.get("text") if isinstance(answers, Mapping) else answers
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise DataError(source, f"{where}, column 'answers'",
                        f"expected {{'text': [str, ...], 'answer_start': [int, ...]}}, "
                        f"got {answers!r:.80}")
    # Keep order, drop blanks and repeats (SQuAD dev lists the same span several times).
    return tuple(dict.fromkeys(t.strip() for t in texts if t.strip()))


def _assign(by_split: dict[str, list[QAExample]], seed: int,
            ) -> tuple[list[QAExample], list[QAExample], list[QAExample]]:
    """Map source splits to train/dev/test, carving missing ones out of train."""
    if "" in by_split:  # one split: the split rule does everything
        return make_splits(by_split[""], seed=seed)
    src_dev, src_test = by_split.get("dev", []), by_split.get("test", [])
    train, dev, test = make_splits(by_split.get("train", []), src_test, seed=seed,
                                   dev_fraction=0.0 if "dev" in by_split else DEV_FRACTION)
    return train, (src_dev if "dev" in by_split else dev), test

"""Hugging Face datasets: save_to_disk folders load offline; splits, corpus ids, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metarag.data.loaders.hf import UNANSWERABLE, load_hf_task
from metarag.errors import DataError

datasets = pytest.importorskip("datasets")

CONTEXTS = [
    "Velazine is dosed at 250 mg twice daily.",
    "The Dunmore lease ends under clause 14.3.",
    "Varnholm was founded on 12 March 1847.",
]


def _rows(prefix: str, n: int, *, unanswerable: int = 0) -> dict[str, list]:
    """n SQuAD-style rows cycling over CONTEXTS; the last `unanswerable` have no answer."""
    rows: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for i in range(n):
        context = CONTEXTS[i % len(CONTEXTS)]
        answer = context.split()[-1].rstrip(".")
        rows["id"].append(f"{prefix}{i}")
        rows["title"].append(f"doc{i % len(CONTEXTS)}")
        rows["context"].append(context)
        rows["question"].append(f"Question {prefix}{i}?")
        no_answer = i >= n - unanswerable
        rows["answers"].append({"text": [] if no_answer else [answer, answer],
                                "answer_start": [] if no_answer else [context.index(answer)] * 2})
    return rows


def _save(tmp_path: Path, name: str, **splits: dict[str, list]) -> str:
    data = datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()})
    out = tmp_path / name
    data.save_to_disk(str(out))
    return str(out)


def test_dataset_dict_round_trip_offline(tmp_path: Path) -> None:
    path = _save(tmp_path, "tiny_squad", train=_rows("t", 12, unanswerable=2),
                 validation=_rows("v", 6), test=_rows("s", 3))
    task = load_hf_task(path, domain="mixed")
    assert (task.name, task.domain, task.language) == ("tiny_squad", "mixed", "en")
    assert [len(task.train), len(task.dev), len(task.test)] == [10, 6, 3]
    assert {e.id for e in task.dev} == {f"v{i}" for i in range(6)}  # validation -> dev
    assert {e.id for e in task.test} == {"s0", "s1", "s2"}
    assert task.skipped == {UNANSWERABLE: 2}
    # One passage per distinct context, shared by all splits; gold = the example's context.
    assert sorted(p.text for p in task.corpus) == sorted(CONTEXTS)
    lookup = task.passage_lookup()
    for ex in task.examples:
        (gold,) = ex.gold_passage_ids
        assert ex.answers[0] in lookup[gold].text
        assert len(ex.answers) == 1  # repeated SQuAD answers collapse
    assert {p.title for p in task.corpus} == {"doc0", "doc1", "doc2"}
    # Passage ids hash the text: stable across loads.
    again = load_hf_task(path)
    assert [p.id for p in again.corpus] == [p.id for p in task.corpus]


def test_single_split_goes_through_make_splits(tmp_path: Path) -> None:
    out = tmp_path / "one"
    datasets.Dataset.from_dict(_rows("x", 20)).save_to_disk(str(out))
    task = load_hf_task(str(out), seed=0, name="mine", language="de")
    assert task.name == "mine" and task.language == "de"
    assert [len(task.train), len(task.dev), len(task.test)] == [14, 2, 4]
    assert {e.language for e in task.examples} == {"de"}
    other = load_hf_task(str(out), seed=1)
    assert [e.id for e in other.test] != [e.id for e in task.test]


def test_missing_test_split_is_carved_from_train(tmp_path: Path) -> None:
    path = _save(tmp_path, "no_test", train=_rows("t", 20), validation=_rows("v", 5))
    task = load_hf_task(path)
    assert [len(task.train), len(task.dev), len(task.test)] == [16, 5, 4]
    assert {e.id[0] for e in task.test} == {"t"}


def test_missing_id_column_gets_generated_ids(tmp_path: Path) -> None:
    rows = _rows("t", 10)
    del rows["id"], rows["title"]
    task = load_hf_task(_save(tmp_path, "no_ids", train=rows))
    assert sorted(e.id for e in task.examples)[:2] == ["train-0", "train-1"]


def test_missing_columns_name_the_dataset_and_the_columns_found(tmp_path: Path) -> None:
    rows = {"question": ["q?"], "passage": ["text"], "answer": ["a"]}
    path = _save(tmp_path, "wrong_columns", train=rows)
    with pytest.raises(DataError) as err:
        load_hf_task(path)
    msg = str(err.value)
    assert "wrong_columns" in msg and "split 'train'" in msg
    assert "['context', 'answers']" in msg and "'passage'" in msg and "'answer'" in msg


def test_unknown_split_name(tmp_path: Path) -> None:
    path = _save(tmp_path, "odd", train=_rows("t", 5), extra=_rows("e", 5))
    with pytest.raises(DataError, match="unknown split name.*'extra'"):
        load_hf_task(path)


def test_bad_language(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ISO 639-1"):
        load_hf_task(str(tmp_path), language="english")


def test_hub_name_offline_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/squad_clone' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load_hf_task("someone/squad_clone")
    msg = str(err.value)
    assert msg.startswith("someone/squad_clone:") and "ConnectionError" in msg
    assert "save_to_disk" in msg and "cannot be reached" in msg


def test_missing_local_path_does_not_try_the_hub(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("went online"))
    with pytest.raises(DataError, match="no such folder"):
        load_hf_task(str(tmp_path / "absent"))


def test_without_datasets_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match=r"pip install 'metarag\[hf\]'"):
        load_hf_task("anything")

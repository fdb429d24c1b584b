"""The SQLite review store on real files: WAL, resume, stable orders, upserts, refusals."""

import sqlite3
from contextlib import closing
from dataclasses import replace

import pytest

from helpers import write_review_runs
from metarag.errors import DataError
from metarag.review.db import ReviewDB, seeded_first
from metarag.review.runs import load_items


def sql(path, query, *args):
    """Run one statement on its own connection (as another process would), committed."""
    with closing(sqlite3.connect(path)) as raw, raw:
        return raw.execute(query, args).fetchall()


@pytest.fixture
def review(tmp_path):
    run_a, run_b, items = load_items(*write_review_runs(tmp_path), "maml", "multitask")
    db = ReviewDB(tmp_path / "sub" / "review.db")
    return db, db.add_comparison("maml", "multitask", items), items


def test_new_file_is_in_wal_mode_and_holds_the_items(review):
    db, comparison, items = review
    assert sql(db.path, "PRAGMA journal_mode") == [("wal",)]
    assert (comparison.system_a, comparison.system_b) == ("maml", "multitask")
    assert db.items(comparison.id) == items
    assert db.item(comparison.id, "bank/q2") == items[1]
    assert db.item(comparison.id, "nope") is None


def test_reopening_resumes_and_appends_new_items_only(review, tmp_path):
    db, comparison, items = review
    db.judge(comparison.id, items[0].key, "ann", "a", "b")
    again = ReviewDB(db.path)  # a new process would do the same
    extra = replace(items[0], key="bank/q99", question_id="q99")
    reopened = again.add_comparison("maml", "multitask", [*items, extra])
    assert reopened.id == comparison.id and len(again.comparisons()) == 1
    assert [i.key for i in again.items(comparison.id)] == [i.key for i in items] + ["bank/q99"]
    assert [j.verdict for j in again.judgements(comparison.id)] == ["a"]


def test_changed_answers_and_a_reversed_pair_are_refused(review):
    db, comparison, items = review
    changed = [replace(items[0], answer_b="a re-made run's answer"), *items[1:]]
    with pytest.raises(DataError, match="item 'bank/q1'.*other content"):
        db.add_comparison("maml", "multitask", changed)
    with pytest.raises(DataError, match="other way round; swap --a and --b"):
        db.add_comparison("multitask", "maml", items)


def test_display_order_is_seeded_stored_and_balanced(review):
    db, comparison, items = review
    key = items[0].key
    first = db.shown_first(comparison, key, "ann")
    assert first == seeded_first("maml", "multitask", key, "ann")
    assert db.shown_first(comparison, key, "ann") == first
    assert sql(db.path, "SELECT shown_first FROM orders WHERE key = ? AND rater = 'ann'",
               key) == [(first,)]
    # Stored, not recomputed: what a rater saw stays even if the seed rule changed.
    sql(db.path, "UPDATE orders SET shown_first = ? WHERE key = ?",
        "b" if first == "a" else "a", key)
    assert db.shown_first(comparison, key, "ann") != first
    with pytest.raises(KeyError):
        db.shown_first(comparison, "no/such", "ann")
    coins = [seeded_first("x", "y", f"t/q{i}", "ann") for i in range(400)]
    assert 160 < coins.count("a") < 240  # a fair coin: 200 +- 4 sd
    assert {seeded_first("x", "y", "t/q1", f"rater{i}") for i in range(20)} == {"a", "b"}


def test_judgements_upsert_and_drive_progress_and_next(review):
    db, comparison, items = review
    assert db.progress(comparison.id, "ann") == (0, 5)
    assert db.next_unjudged(comparison.id, "ann") == items[0]
    db.judge(comparison.id, items[0].key, "ann", "tie", "a", "close call")
    db.judge(comparison.id, items[0].key, "ann", "b", "a", "")  # changes her mind
    db.judge(comparison.id, items[2].key, "ann", "both_wrong", "b")
    assert db.progress(comparison.id, "ann") == (2, 5)
    assert db.progress(comparison.id, "bob") == (0, 5)
    assert db.next_unjudged(comparison.id, "ann") == items[1]
    rows = db.judgements(comparison.id)
    assert [(j.key, j.verdict, j.comment) for j in rows] == [
        (items[0].key, "b", ""), (items[2].key, "both_wrong", "")]
    for item in items[1:]:
        if item.key != items[2].key:
            db.judge(comparison.id, item.key, "ann", "a", "a")
    assert db.next_unjudged(comparison.id, "ann") is None


def test_bad_judgements_are_refused_and_nothing_is_written(review):
    db, comparison, items = review
    with pytest.raises(ValueError, match="verdict must be one of"):
        db.judge(comparison.id, items[0].key, "ann", "A", "a")
    with pytest.raises(ValueError, match="shown_first"):
        db.judge(comparison.id, items[0].key, "ann", "a", "left")
    with pytest.raises(KeyError):
        db.judge(comparison.id, "no/such", "ann", "a", "a")
    assert db.judgements() == []


def test_files_that_are_not_review_databases(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="not a review database"):
        ReviewDB(junk)
    other = tmp_path / "other.db"
    sql(other, "CREATE TABLE stuff (x)")
    with pytest.raises(DataError, match="SQLite database of something else.*stuff"):
        ReviewDB(other)

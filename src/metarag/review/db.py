"""The review store: one SQLite file holding comparisons, items, display orders and judgements.

Every judgement is committed the moment it arrives (WAL journal, synchronous=FULL),
so a server killed at any point loses nothing already acknowledged. Each call opens
its own short-lived connection: the web server answers requests on several
threads, and SQLite connections must not be shared between them.

Tables:
    comparisons: one row per pair of systems (``system_a``, ``system_b``).
    items: the questions of a comparison, with both answers (JSON of `runs.Item`).
    orders: which system a rater sees first on an item (seeded, then fixed).
    judgements: one verdict per (comparison, item, rater), in system terms:
        ``a`` (system A better), ``b``, ``tie`` or ``both_wrong``; a later
        judgement by the same rater replaces the earlier one.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from metarag.errors import DataError
from metarag.review.runs import Item

VERDICTS = ("a", "b", "tie", "both_wrong")
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY,
    system_a TEXT NOT NULL, system_b TEXT NOT NULL,
    path_a TEXT NOT NULL, path_b TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (system_a, system_b));
CREATE TABLE IF NOT EXISTS items (
    comparison_id INTEGER NOT NULL REFERENCES comparisons(id),
    key TEXT NOT NULL, position INTEGER NOT NULL, content TEXT NOT NULL,
    PRIMARY KEY (comparison_id, key));
CREATE TABLE IF NOT EXISTS orders (
    comparison_id INTEGER NOT NULL, key TEXT NOT NULL, rater TEXT NOT NULL,
    shown_first TEXT NOT NULL CHECK (shown_first IN ('a', 'b')),
    PRIMARY KEY (comparison_id, key, rater),
    FOREIGN KEY (comparison_id, key) REFERENCES items(comparison_id, key));
CREATE TABLE IF NOT EXISTS judgements (
    comparison_id INTEGER NOT NULL, key TEXT NOT NULL, rater TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'both_wrong')),
    shown_first TEXT NOT NULL CHECK (shown_first IN ('a', 'b')),
    comment TEXT NOT NULL DEFAULT '',
    judged_at TEXT NOT NULL,
    PRIMARY KEY (comparison_id, key, rater),
    FOREIGN KEY (comparison_id, key) REFERENCES items(comparison_id, key));
"""


@dataclass(frozen=True)
class Comparison:
    """A pair of systems under review."""

    id: int
    system_a: str
    system_b: str
    path_a: str
    path_b: str


@dataclass(frozen=True)
class Judgement:
    """One rater's verdict on one item, in system terms (see `VERDICTS`)."""

    comparison_id: int
    key: str
    rater: str
    verdict: str
    shown_first: str
    comment: str
    judged_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def seeded_first(system_a: str, system_b: str, key: str, rater: str) -> str:
    """Which system a rater sees first on an item: a coin flip seeded by all four names.

    ``random.Random`` hashes a string seed with SHA-512, so the flip is the same in
    every process (unlike ``hash()``).
    """
    coin = random.Random(f"{system_a}\x1f{system_b}\x1f{key}\x1f{rater}").random()
    return "a" if coin < 0.5 else "b"


class ReviewDB:
    """The SQLite review store at ``path`` (created with its parents if absent).

    Raises:
        DataError: The file is not a SQLite database, or one of another kind.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            try:
                # WAL: readers never block the writer; the mode is stored in the file.
                tables = {r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "comparisons" not in tables:
                    raise DataError(self.path, None, "an SQLite database of something else "
                                    f"(tables: {', '.join(sorted(tables))}); give another path")
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
            finally:
                db.close()
            with self._connect(write=True) as db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                           (SCHEMA_VERSION,))
                (version,) = db.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as err:
            raise DataError(self.path, None, f"not a review database ({err})") from None
        if version != SCHEMA_VERSION:
            raise DataError(self.path, "meta.schema_version",
                            f"version {version}, this metarag reads {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction: committed on success, rolled back on error.

        A writing transaction takes the write lock at once (BEGIN IMMEDIATE), so a
        read-then-write never fails half-way on a lock another thread took meanwhile.
        """
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when judge() returns
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # --- comparisons and items -------------------------------------------------

    def add_comparison(self, system_a: str, system_b: str, items: Sequence[Item], *,
                       path_a: str = "", path_b: str = "") -> Comparison:
        """Register a comparison and its items, or reopen it to resume.

        Reopening checks that every item already stored still has the same question
        and answers: judgements of other answers must not be mixed in. New items
        are appended after the stored ones.

        Raises:
            DataError: The pair is stored the other way round, or a stored item changed.
        """
        with self._connect(write=True) as db:
            if db.execute("SELECT 1 FROM comparisons WHERE system_a = ? AND system_b = ?",
                          (system_b, system_a)).fetchone():
                raise DataError(self.path, f"comparison {system_b!r} vs {system_a!r}",
                                "this pair is stored the other way round; swap --a and --b")
            db.execute("INSERT OR IGNORE INTO comparisons "
                       "(system_a, system_b, path_a, path_b, created_at) VALUES (?, ?, ?, ?, ?)",
                       (system_a, system_b, path_a, path_b, _now()))
            row = db.execute("SELECT id, system_a, system_b, path_a, path_b FROM comparisons "
                             "WHERE system_a = ? AND system_b = ?",
                             (system_a, system_b)).fetchone()
            comparison = Comparison(*row)
            stored = dict(db.execute("SELECT key, content FROM items WHERE comparison_id = ?",
                                     (comparison.id,)).fetchall())
            position = len(stored)
            for item in items:
                content = json.dumps(item.to_dict(), ensure_ascii=False, sort_keys=True)
                if item.key in stored:
                    if json.loads(stored[item.key]) != json.loads(content):
                        raise DataError(self.path, f"item {item.key!r}",
                                        f"stored with other content than {system_a!r} vs "
                                        f"{system_b!r} now gives (a run was re-made?); use "
                                        "another --db, or name the runs apart")
                    continue
                db.execute("INSERT INTO items VALUES (?, ?, ?, ?)",
                           (comparison.id, item.key, position, content))
                position += 1
        return comparison

    def comparisons(self) -> list[Comparison]:
        """Every comparison, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT id, system_a, system_b, path_a, path_b FROM comparisons "
                              "ORDER BY id").fetchall()
        return [Comparison(*r) for r in rows]

    def comparison(self, comparison_id: int) -> Comparison:
        """One comparison by id.

        Raises:
            KeyError: No such comparison.
        """
        for c in self.comparisons():
            if c.id == comparison_id:
                return c
        raise KeyError(comparison_id)

    def items(self, comparison_id: int) -> list[Item]:
        """A comparison's items in review order."""
        with self._connect() as db:
            rows = db.execute("SELECT content FROM items WHERE comparison_id = ? "
                              "ORDER BY position", (comparison_id,)).fetchall()
        return [Item.from_dict(json.loads(r[0])) for r in rows]

    def item(self, comparison_id: int, key: str) -> Item | None:
        """One item by key, or None."""
        with self._connect() as db:
            row = db.execute("SELECT content FROM items WHERE comparison_id = ? AND key = ?",
                             (comparison_id, key)).fetchone()
        return None if row is None else Item.from_dict(json.loads(row[0]))

    # --- display order -------------------------------------------------------------

    def shown_first(self, comparison: Comparison, key: str, rater: str) -> str:
        """The system ("a" or "b") a rater sees as answer A of an item; fixed once drawn.

        Raises:
            KeyError: No such item in the comparison.
        """
        first = seeded_first(comparison.system_a, comparison.system_b, key, rater)
        with self._connect(write=True) as db:
            if not db.execute("SELECT 1 FROM items WHERE comparison_id = ? AND key = ?",
                              (comparison.id, key)).fetchone():
                raise KeyError(key)
            db.execute("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?)",
                       (comparison.id, key, rater, first))
            (stored,) = db.execute("SELECT shown_first FROM orders WHERE comparison_id = ? "
                                   "AND key = ? AND rater = ?",
                                   (comparison.id, key, rater)).fetchone()
        return stored

    # --- judgements ----------------------------------------------------------------

    def judge(self, comparison_id: int, key: str, rater: str, verdict: str,
              shown_first: str, comment: str = "") -> Judgement:
        """Store (or replace) a rater's verdict on an item, committed before returning.

        Raises:
            ValueError: A verdict not in `VERDICTS`, or ``shown_first`` not "a"/"b".
            KeyError: No such item in the comparison.
        """
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
        if shown_first not in ("a", "b"):
            raise ValueError(f"shown_first must be 'a' or 'b', got {shown_first!r}")
        judgement = Judgement(comparison_id, key, rater, verdict, shown_first, comment, _now())
        with self._connect(write=True) as db:
            if not db.execute("SELECT 1 FROM items WHERE comparison_id = ? AND key = ?",
                              (comparison_id, key)).fetchone():
                raise KeyError(key)
            db.execute("INSERT INTO judgements VALUES (?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT (comparison_id, key, rater) DO UPDATE SET "
                       "verdict = excluded.verdict, shown_first = excluded.shown_first, "
                       "comment = excluded.comment, judged_at = excluded.judged_at",
                       (comparison_id, key, rater, verdict, shown_first, comment,
                        judgement.judged_at))
        return judgement

    def judgements(self, comparison_id: int | None = None) -> list[Judgement]:
        """Every judgement (of one comparison, or all), by comparison, item order, rater."""
        query = ("SELECT j.comparison_id, j.key, j.rater, j.verdict, j.shown_first, j.comment, "
                 "j.judged_at FROM judgements j JOIN items i "
                 "ON i.comparison_id = j.comparison_id AND i.key = j.key")
        args: tuple = ()
        if comparison_id is not None:
            query += " WHERE j.comparison_id = ?"
            args = (comparison_id,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY j.comparison_id, i.position, j.rater",
                              args).fetchall()
        return [Judgement(*r) for r in rows]

    def next_unjudged(self, comparison_id: int, rater: str) -> Item | None:
        """The first item (in review order) the rater has not judged; None when done."""
        with self._connect() as db:
            row = db.execute(
                "SELECT content FROM items i WHERE comparison_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM judgements j WHERE j.comparison_id = i.comparison_id "
                "AND j.key = i.key AND j.rater = ?) ORDER BY position LIMIT 1",
                (comparison_id, rater)).fetchone()
        return None if row is None else Item.from_dict(json.loads(row[0]))

    def progress(self, comparison_id: int, rater: str) -> tuple[int, int]:
        """(items the rater has judged, items in the comparison)."""
        with self._connect() as db:
            (total,) = db.execute("SELECT COUNT(*) FROM items WHERE comparison_id = ?",
                                  (comparison_id,)).fetchone()
            (done,) = db.execute("SELECT COUNT(*) FROM judgements WHERE comparison_id = ? "
                                 "AND rater = ?", (comparison_id, rater)).fetchone()
        return done, total

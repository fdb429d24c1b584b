"""Errors that tell the user what was wrong, where, and what to do."""

from __future__ import annotations


class MetaRAGError(Exception):
    """Base class for every error metarag raises on purpose."""


class DataError(MetaRAGError, ValueError):
    """Input data is malformed, missing or inconsistent.

    The message always names the file and the place inside it (line, column or
    JSON path) so the user can go straight to the problem.
    """

    def __init__(self, source: object, where: str | None, problem: str) -> None:
        self.source = str(source)
        self.where = where
        self.problem = problem
        location = f"{self.source}" + (f" at {where}" if where else "")
        super().__init__(f"{location}: {problem}")


class IndexMismatchError(MetaRAGError, ValueError):
    """An index was built with a different encoder than the one asked to query it."""

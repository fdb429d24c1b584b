"""Deterministic train/dev/test splits that respect a source's own split files.

Rule, the same for every source: examples a source marks as test stay test;
everything else forms a pool that is shuffled with the seed and cut into
train/dev (and test, when the source has no test set of its own).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from metarag.data.schema import QAExample

DEV_FRACTION = 0.1
TEST_FRACTION = 0.2


def make_splits(
    pool: Sequence[QAExample],
    source_test: Sequence[QAExample] = (),
    *,
    seed: int = 0,
    dev_fraction: float = DEV_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> tuple[list[QAExample], list[QAExample], list[QAExample]]:
    """Split examples into (train, dev, test).

    Args:
        pool: Examples with no fixed role (a source's train, dev or only file).
        source_test: Examples the source itself designates for testing.
        seed: Shuffling seed; the same seed and input give the same splits.
        dev_fraction: Share of the pool that becomes dev.
        test_fraction: Share of the pool that becomes test, used only when the
            source has no test set of its own.

    Returns:
        Three disjoint lists. Order inside each split follows the shuffled pool
        (test keeps the source's order when it comes from the source).
    """
    if not 0 <= dev_fraction < 1 or not 0 <= test_fraction < 1:
        raise ValueError("dev_fraction and test_fraction must be in [0, 1)")
    if dev_fraction + (0 if source_test else test_fraction) >= 1:
        raise ValueError("dev_fraction + test_fraction must leave room for train")
    # Sort before shuffling so the result does not depend on the input order.
    shuffled = sorted(pool, key=lambda e: e.id)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    n_dev = round(n * dev_fraction)
    n_test = 0 if source_test else round(n * test_fraction)
    test = list(source_test) if source_test else shuffled[:n_test]
    dev = shuffled[n_test:n_test + n_dev]
    train = shuffled[n_test + n_dev:]
    return train, dev, test

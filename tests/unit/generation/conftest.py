"""Generation tests run torch on one thread.

The tiny models do hundreds of very small ops; on a shared 2-core machine each
op waits for the second OpenMP thread to be scheduled (~8 ms per op measured),
making a test 100x slower than on one thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""The benchmark's cell store: one process per run folder."""

import pytest

from metarag.benchmark import BenchmarkConfig, BenchmarkError, CellStore


def test_a_second_run_on_the_same_folder_is_refused_until_the_first_closes(tmp_path):
    config = BenchmarkConfig(out=str(tmp_path))
    first = CellStore(tmp_path, config)
    with pytest.raises(BenchmarkError, match="another benchmark is running"):
        CellStore(tmp_path, config)
    first.close()
    CellStore(tmp_path, config).close()

import pytest


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Commands write default outputs (runs/...) relative to the working directory: keep
    them out of the repository."""
    monkeypatch.chdir(tmp_path)

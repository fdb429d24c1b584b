"""Find the right loader for a task source: a shared dataset, a user folder, HF datasets.

`load_task` takes one source; `load_tasks` takes a data root holding several
(e.g. ``../shared/data``) or nothing, which gives the embedded synthetic suite.
Loader modules are imported lazily so the CLI stays fast to start.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from metarag.data.schema import Task
from metarag.errors import DataError

SYNTHETIC_PREFIX = "synthetic"
USER_FILES = ("corpus.jsonl", "corpus.csv")
HF_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


def load_task(
    source: str | Path, *, seed: int = 0, max_tokens: int = 150, overlap: int = 30
) -> Task:
    """Load one task from wherever it lives.

    Args:
        source: One of
            - ``synthetic/<domain>``: a domain of the embedded synthetic suite;
            - a folder named like a shared dataset (``.../xquad``, ``.../medquad``, ...);
            - a folder in the user format (``corpus.jsonl``/``corpus.csv`` + ``qa.*``,
              see docs/DATA_FORMAT.md);
            - a Hugging Face dataset saved with ``save_to_disk``;
            - otherwise a Hugging Face hub name (needs a network connection).
        seed: Split seed.
        max_tokens, overlap: Chunking of long documents (shared datasets).

    Returns:
        A validated Task.
    """
    text = str(source)
    if text == SYNTHETIC_PREFIX or text.startswith(SYNTHETIC_PREFIX + "/"):
        return _synthetic_task(text, seed)
    path = Path(source)
    if path.is_dir():
        from metarag.data.loaders.shared import SHARED_DATASETS, load_shared

        if path.name in SHARED_DATASETS:
            return load_shared(path.name, path.parent, seed=seed,
                               max_tokens=max_tokens, overlap=overlap)
        if any((path / f).is_file() for f in USER_FILES):
            from metarag.data.loaders.user import load_user_task

            return load_user_task(path, seed=seed)
        if any((path / f).is_file() for f in HF_MARKERS):
            from metarag.data.loaders.hf import load_hf_task

            return load_hf_task(str(path), seed=seed)
        raise DataError(path, None, "not a task folder: expected a shared dataset name "
                        f"or one of {', '.join(USER_FILES + HF_MARKERS)} (see docs/DATA_FORMAT.md)")
    if path.exists():
        raise DataError(path, None, "a task source must be a folder (see docs/DATA_FORMAT.md)")
    if "/" in text and not text.startswith((".", "/")):
        from metarag.data.loaders.hf import load_hf_task

        return load_hf_task(text, seed=seed)
    raise DataError(path, None, "no such folder, and not a synthetic domain or hub name")


def load_tasks(
    data_dir: str | Path | None = None,
    names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    max_tokens: int = 150,
    overlap: int = 30,
) -> list[Task]:
    """Load every task under a data root, or the synthetic suite when it is None.

    Args:
        data_dir: A folder whose sub-folders are tasks (shared datasets or user
            folders), or a single task folder. None: the embedded synthetic suite.
        names: Keep only these tasks (folder names, or synthetic domain names).
        seed, max_tokens, overlap: As in `load_task`.
    """
    if data_dir is None:
        from metarag.data.synthetic import synthetic_suite

        tasks = synthetic_suite(seed=seed)
        if names:  # "legal" and "synthetic/legal" both name a domain
            names = [n.removeprefix(SYNTHETIC_PREFIX + "/") for n in names]
        return _select(tasks, names, key=lambda t: t.name.split("/", 1)[-1], where="synthetic")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(root, None, "data folder not found")
    if _is_task_folder(root):
        return [load_task(root, seed=seed, max_tokens=max_tokens, overlap=overlap)]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _is_task_folder(p))
    if names:
        known = {p.name for p in folders}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise DataError(root, None, f"no task folder named {', '.join(unknown)}; "
                            f"found: {', '.join(sorted(known)) or 'none'}")
        folders = [p for p in folders if p.name in names]
    if not folders:
        raise DataError(root, None, "holds no task folders (see docs/DATA_FORMAT.md)")
    return [load_task(p, seed=seed, max_tokens=max_tokens, overlap=overlap) for p in folders]


def _is_task_folder(path: Path) -> bool:
    from metarag.data.loaders.shared import SHARED_DATASETS

    return path.name in SHARED_DATASETS or any(
        (path / f).is_file() for f in USER_FILES + HF_MARKERS)


def _synthetic_task(source: str, seed: int) -> Task:
    from metarag.data.synthetic import synthetic_suite

    domain = source.partition("/")[2]
    if not domain:
        raise DataError(source, None, "name one synthetic domain, e.g. synthetic/pharmacy")
    return synthetic_suite(seed=seed, domains=[domain])[0]


def _select(tasks: list[Task], names: Sequence[str] | None, *, key, where: str) -> list[Task]:
    if not names:
        return tasks
    by_name = {key(t): t for t in tasks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DataError(where, None, f"unknown task {', '.join(unknown)}; "
                        f"available: {', '.join(by_name)}")
    return [by_name[n] for n in names]

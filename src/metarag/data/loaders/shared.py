"""The 8 real datasets in ``../shared/data`` (origin and caveats: its SOURCES.md).

Each entry says where a dataset lives and how to load it. Splits follow
`metarag.data.splits`: files a source marks as test are the test split; the
rest is a pool cut into train/dev (and test, when the source has none):

- policyqa: dev.json -> pool, test.json -> test
- tatqa: dev -> pool, test_gold -> test
- cmrc2018: dev -> pool, trial -> test
- pubmedqa: the 500 PMIDs of test_ground_truth.json -> test
- xquad, covid_qa, medquad, agxqa: one pool, cut into train/dev/test
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metarag.data.loaders.medquad import load_medquad
from metarag.data.loaders.pubmedqa import load_pubmedqa
from metarag.data.loaders.squad import load_squad
from metarag.data.loaders.tatqa import load_tatqa
from metarag.data.schema import Task
from metarag.errors import DataError

# (folder, *, seed, max_tokens, overlap) -> Task
Loader = Callable[..., Task]


@dataclass(frozen=True)
class SharedDataset:
    """One shared dataset: its labels, folder and loader.

    Attributes:
        name: Task name, e.g. "covid_qa".
        domain: Human-readable domain.
        language: ISO 639-1 code.
        folder: Folder under the data root.
        loader: ``loader(folder_path, *, seed, max_tokens, overlap) -> Task``.
    """

    name: str
    domain: str
    language: str
    folder: str
    loader: Loader


def load_xquad(path: Path, *, seed: int = 0, max_tokens: int = 150, overlap: int = 30) -> Task:
    """XQuAD (English): one file, split with ``seed``."""
    return _squad("xquad", [path / "xquad.en.json"], [], seed, max_tokens, overlap)


def load_covid_qa(path: Path, *, seed: int = 0, max_tokens: int = 150,
                  overlap: int = 30) -> Task:
    """COVID-QA (April 2020 release): whole papers, chunked; split with ``seed``."""
    return _squad("covid_qa", [path / "200423_covidQA.json"], [], seed, max_tokens, overlap)


def load_policyqa(path: Path, *, seed: int = 0, max_tokens: int = 150,
                  overlap: int = 30) -> Task:
    """PolicyQA: dev.json is the pool, test.json the test split."""
    return _squad("policyqa", [path / "dev.json"], [path / "test.json"],
                  seed, max_tokens, overlap)


def load_cmrc2018(path: Path, *, seed: int = 0, max_tokens: int = 150,
                  overlap: int = 30) -> Task:
    """CMRC 2018 (Chinese, chunked by characters): dev is the pool, trial the test split."""
    return _squad("cmrc2018", [path / "cmrc2018_dev.json"], [path / "cmrc2018_trial.json"],
                  seed, max_tokens, overlap)


def load_agxqa(path: Path, *, seed: int = 0, max_tokens: int = 150, overlap: int = 30) -> Task:
    """AgXQA (part B sample): one file, split with ``seed``."""
    return _squad("agxqa", [path / "annotations_part_B_Nov03_Dec23_2023.json"], [],
                  seed, max_tokens, overlap)


def _squad(name: str, pool: list[Path], test: list[Path], seed: int, max_tokens: int,
           overlap: int) -> Task:
    spec = SHARED_DATASETS[name]
    return load_squad(pool, test, name=name, domain=spec.domain, language=spec.language,
                      seed=seed, max_tokens=max_tokens, overlap=overlap)


SHARED_DATASETS: dict[str, SharedDataset] = {d.name: d for d in (
    SharedDataset("xquad", "general (Wikipedia)", "en", "xquad", load_xquad),
    SharedDataset("covid_qa", "biomedical (COVID-19 papers)", "en", "covid_qa", load_covid_qa),
    SharedDataset("pubmedqa", "biomedical (research abstracts)", "en", "pubmedqa",
                  load_pubmedqa),
    SharedDataset("medquad", "consumer health (NIH websites)", "en", "medquad", load_medquad),
    SharedDataset("tatqa", "finance (tables + text)", "en", "tatqa", load_tatqa),
    SharedDataset("policyqa", "legal (privacy policies)", "en", "policyqa", load_policyqa),
    SharedDataset("cmrc2018", "general (Chinese Wikipedia)", "zh", "cmrc2018", load_cmrc2018),
    SharedDataset("agxqa", "agriculture (extension publications)", "en", "agxqa", load_agxqa),
)}


def load_shared(
    name: str, data_dir: str | Path, *, seed: int = 0, max_tokens: int = 150, overlap: int = 30
) -> Task:
    """Load one shared dataset by name.

    Args:
        name: A key of `SHARED_DATASETS`.
        data_dir: The folder holding the dataset folders (``../shared/data``).
        seed: Split seed.
        max_tokens, overlap: Chunking of long documents.

    Returns:
        The validated task, labelled with the registry's name and domain.

    Raises:
        DataError: Unknown name, missing folder, or bad data inside it.
    """
    if name not in SHARED_DATASETS:
        raise DataError(name, None, "not a shared dataset; known: "
                        f"{', '.join(SHARED_DATASETS)}")
    spec = SHARED_DATASETS[name]
    folder = Path(data_dir) / spec.folder
    if not folder.is_dir():
        raise DataError(folder, None, f"folder of shared dataset {name!r} not found; "
                        "point data_dir at the shared data root (e.g. ../shared/data)")
    task = spec.loader(folder, seed=seed, max_tokens=max_tokens, overlap=overlap)
    # The format loaders have their own default labels; the registry's win.
    task.name, task.domain, task.language = spec.name, spec.domain, spec.language
    return task.validate(source=folder)

"""DenseIndex: flat/IVF/HNSW search, k clamping, save/load round trips, refusals and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metarag.data.schema import Passage
from metarag.errors import DataError, IndexMismatchError
from metarag.retrieval.encoder import DenseEncoder
from metarag.retrieval.index import DenseIndex, auto_kind, ivf_nlist
from metarag.retrieval.passages import passage_text


def _random_corpus(n: int, d: int, seed: int = 0, clusters: int = 0
                   ) -> tuple[list[Passage], np.ndarray]:
    """n unit vectors; with clusters > 0, drawn around that many centres like real embeddings."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d)).astype(np.float32)
    if clusters:
        centres = rng.standard_normal((clusters, d)).astype(np.float32)
        emb = centres[rng.integers(0, clusters, n)] + 0.3 * emb
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return [Passage(f"p{i}", f"text {i}") for i in range(n)], emb


def test_flat_finds_each_passage_from_its_own_text(tiny_encoder: DenseEncoder,
                                                   corpus: list[Passage]) -> None:
    index = DenseIndex.build(corpus, tiny_encoder, kind="auto")
    assert index.kind == "flat" and len(index) == len(corpus) and index.dim == 32
    hits = index.search([passage_text(p) for p in corpus], k=3)
    assert [ids[0] for ids in hits.ids] == [p.id for p in corpus]
    np.testing.assert_allclose([s[0] for s in hits.scores], 1.0, atol=1e-5)
    assert all(s == sorted(s, reverse=True) for s in hits.scores)
    assert hits.method == "dense"


def test_k_larger_than_corpus_is_clamped(tiny_encoder: DenseEncoder, corpus: list[Passage]) -> None:
    index = DenseIndex.build(corpus, tiny_encoder)
    hits = index.search(["anything", "else"], k=100)
    assert [len(ids) for ids in hits.ids] == [len(corpus)] * 2
    assert sorted(hits.ids[0]) == sorted(p.id for p in corpus)
    assert index.search(["x"], k=0).ids == [[]]


def test_approximate_indexes_agree_with_flat() -> None:
    # Uniform random vectors have no neighbourhood structure for IVF's buckets to
    # exploit; clustered ones behave like real embeddings.
    passages, emb = _random_corpus(3000, 32, clusters=40)
    rng = np.random.default_rng(1)
    queries = emb[:50] + 0.05 * rng.standard_normal((50, 32)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = DenseIndex.from_embeddings(passages, emb, kind="flat").search_embeddings(queries, 10)
    for kind in ("ivf", "hnsw"):
        index = DenseIndex.from_embeddings(passages, emb, kind=kind)
        approx = index.search_embeddings(queries, 10)
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.ids, exact.ids,
                                                                     strict=True)])
        assert recall >= 0.9, (kind, recall)
        # The planted nearest neighbour is found by every kind.
        assert [ids[0] for ids in approx.ids] == [f"p{i}" for i in range(50)]
    ivf = DenseIndex.from_embeddings(passages, emb, kind="ivf")
    ivf.set_search_params(nprobe=ivf_nlist(3000))  # probing every bucket is exact
    assert ivf.search_embeddings(queries, 10).ids == exact.ids


def test_auto_kind_threshold() -> None:
    assert auto_kind(50_000) == "flat"
    assert auto_kind(50_001) == "hnsw"


def test_ivf_drops_missing_results() -> None:
    # Two far-apart clusters; probing one bucket cannot fill k=100, FAISS pads with -1.
    rng = np.random.default_rng(0)
    centres = np.zeros((2, 16), dtype=np.float32)
    centres[0, 0], centres[1, 1] = 1.0, 1.0
    emb = np.repeat(centres, 60, axis=0) + 0.01 * rng.standard_normal((120, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    passages = [Passage(f"p{i}", "t") for i in range(120)]
    index = DenseIndex.from_embeddings(passages, emb, kind="ivf")
    index.set_search_params(nprobe=1)
    hits = index.search_embeddings(centres[0], 100)
    assert 0 < len(hits.ids[0]) < 100 and len(hits.scores[0]) == len(hits.ids[0])
    assert all(pid.startswith("p") for pid in hits.ids[0])


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_save_load_round_trip(kind: str, tiny_encoder: DenseEncoder, corpus: list[Passage],
                              tmp_path: Path) -> None:
    index = DenseIndex.build(corpus, tiny_encoder, kind=kind)
    questions = ["Which tower was built for a fair?", "How do cells make energy?"]
    before = index.search(questions, k=4)
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "index.faiss", "index.json", "passages.jsonl"]
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert (meta["kind"], meta["dim"], meta["count"], meta["language"]) == (
        kind, 32, len(corpus), "en")
    assert meta["encoder"] == tiny_encoder.identity()

    for encoder in (tiny_encoder, None):  # None reloads it from the recorded path
        loaded = DenseIndex.load(tmp_path / "idx", encoder=encoder)
        assert loaded.passages == corpus and loaded.kind == kind
        after = loaded.search(questions, k=4)
        assert after.ids == before.ids
        np.testing.assert_allclose(after.scores, before.scores, atol=1e-6)


def test_load_refuses_a_different_encoder(tiny_encoder: DenseEncoder, corpus: list[Passage],
                                          other_tiny_encoder_dir: Path, tmp_path: Path) -> None:
    DenseIndex.build(corpus, tiny_encoder).save(tmp_path)
    other = DenseEncoder.from_pretrained(other_tiny_encoder_dir, max_length=64)
    with pytest.raises(IndexMismatchError) as err:
        DenseIndex.load(tmp_path, encoder=other)
    message = str(err.value)
    assert tiny_encoder.name_or_path in message and str(other_tiny_encoder_dir) in message
    assert "Rebuild the index" in message


def test_index_without_encoder(corpus: list[Passage], tmp_path: Path) -> None:
    _, emb = _random_corpus(len(corpus), 8)
    index = DenseIndex.from_embeddings(corpus, emb, language="zh")
    with pytest.raises(ValueError, match="no encoder"):
        index.search(["q"], 2)
    loaded = DenseIndex.load(index.save(tmp_path))
    assert loaded.encoder is None and loaded.language == "zh"
    assert loaded.search_embeddings(emb[2], 1).ids == [[corpus[2].id]]


def test_bad_inputs(tiny_encoder: DenseEncoder, corpus: list[Passage]) -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        DenseIndex.build([], tiny_encoder)
    with pytest.raises(ValueError, match="duplicate passage ids"):
        DenseIndex.build([corpus[0], corpus[0]], tiny_encoder)
    with pytest.raises(ValueError, match="unknown index kind"):
        DenseIndex.build(corpus, tiny_encoder, kind="annoy")  # type: ignore[arg-type]
    index = DenseIndex.build(corpus, tiny_encoder)
    with pytest.raises(ValueError, match=r"shape \(Q, 32\)"):
        index.search_embeddings(np.zeros((1, 7), dtype=np.float32), 1)


@pytest.fixture()
def saved(tiny_encoder: DenseEncoder, corpus: list[Passage], tmp_path: Path) -> Path:
    return DenseIndex.build(corpus, tiny_encoder).save(tmp_path / "idx")


@pytest.mark.parametrize("name", ["index.json", "index.faiss", "passages.jsonl"])
def test_missing_file_is_named(saved: Path, name: str, tiny_encoder: DenseEncoder) -> None:
    (saved / name).unlink()
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        DenseIndex.load(saved, encoder=tiny_encoder)


def test_corrupt_faiss_file_is_named(saved: Path, tiny_encoder: DenseEncoder) -> None:
    path = saved / "index.faiss"
    size = path.stat().st_size
    path.write_bytes(b"\x00" * size)  # same size, so only FAISS itself can notice
    with pytest.raises(DataError, match=r"index\.faiss.*not a readable FAISS index"):
        DenseIndex.load(saved, encoder=tiny_encoder)
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"index\.faiss.*bytes but index\.json records"):
        DenseIndex.load(saved, encoder=tiny_encoder)


def test_corrupt_metadata_and_passages_are_named(saved: Path, tiny_encoder: DenseEncoder) -> None:
    (saved / "index.json").write_text("{not json")
    with pytest.raises(DataError, match=r"index\.json at line 1"):
        DenseIndex.load(saved, encoder=tiny_encoder)


def test_corrupt_passages_are_named(saved: Path, tiny_encoder: DenseEncoder) -> None:
    meta = json.loads((saved / "index.json").read_text())
    text = (saved / "passages.jsonl").read_text().replace('"id"', '"key"', 1)
    (saved / "passages.jsonl").write_text(text)
    meta["files"]["passages.jsonl"] = (saved / "passages.jsonl").stat().st_size
    (saved / "index.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"passages\.jsonl at record 1: missing field 'id'"):
        DenseIndex.load(saved, encoder=tiny_encoder)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="index directory not found"):
        DenseIndex.load(tmp_path / "absent")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_stored_embeddings_come_back_exactly(kind):
    import numpy as np

    from metarag.data.schema import Passage
    from metarag.retrieval import DenseIndex

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((400, 8)).astype("float32")
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    passages = [Passage(f"p{i}", f"text {i}") for i in range(400)]
    index = DenseIndex.from_embeddings(passages, emb, kind=kind)
    np.testing.assert_array_equal(index.stored_embeddings(), emb)

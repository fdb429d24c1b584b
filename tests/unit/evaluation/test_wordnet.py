"""WordNet for METEOR: found or built from Debian's files, and readable by NLTK."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarag.evaluation.wordnet import (
    WordNetUnavailableError,
    build_wordnet,
    ensure_wordnet,
    find_source,
    main,
)


@pytest.fixture(scope="module")
def wordnet_root() -> Path:
    """The WordNet NLTK reads; skip (with the fix) when it cannot be set up."""
    try:
        return ensure_wordnet()
    except WordNetUnavailableError as err:
        pytest.skip(f"WordNet unavailable: {err}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layout built here from the local WordNet 3.0 database (e.g. Debian's)."""
    source = find_source()
    if source is None:
        pytest.skip("no WordNet 3.0 database to build from; `apt-get install wordnet-base`")
    return build_wordnet(source, tmp_path_factory.mktemp("nltk_data"))


def _index_sense(folder: Path) -> dict[str, str]:
    with (folder / "index.sense").open(encoding="ascii") as fh:
        return {line.split(" ", 1)[0]: line.rstrip("\n") for line in fh}


def test_nltk_reads_wordnet(wordnet_root: Path) -> None:
    from nltk.corpus import wordnet

    assert wordnet.synsets("dog")
    assert wordnet.synset("dog.n.01").lexname() == "noun.animal"  # lexnames is right
    # index.sense answers sense-key lookups (Debian ships no index.sense).
    assert wordnet.lemma_from_key("dog%1:05:00::").synset().name() == "dog.n.01"


def test_layout(built: Path) -> None:
    assert built.name == "wordnet" and built.parent.name == "corpora"
    for name in ("data.noun", "index.verb", "adj.exc", "lexnames", "index.sense"):
        assert (built / name).is_file(), name
    lexnames = (built / "lexnames").read_text().splitlines()
    # 45 lexicographer files: "NN<TAB>name<TAB>syntactic category (1 noun ... 4 adverb)".
    assert len(lexnames) == 45
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[5] == "05\tnoun.animal\t1"
    assert lexnames[44] == "44\tadj.ppl\t3"


def test_index_sense_agrees_with_nltk(built: Path, wordnet_root: Path) -> None:
    from nltk.corpus import wordnet

    senses = _index_sense(built)
    # NLTK derives each lemma's sense key itself from the data files; every one
    # must be in the generated file and point at its synset. "ablaze" has
    # adjective satellites, whose keys carry the head adjective ("lighted:00").
    lemmas = [lemma for word in ("dog", "ablaze", "run", "quickly")
              for synset in wordnet.synsets(word) for lemma in synset.lemmas()]
    assert any(lemma.key().startswith("ablaze%5:") for lemma in lemmas)
    for lemma in lemmas:
        fields = senses[lemma.key()].split()
        assert int(fields[1]) == lemma.synset().offset(), lemma.key()
    # The same line as Princeton's index.sense: key, offset, sense number, tag count.
    assert senses["dog%1:05:00::"] == "dog%1:05:00:: 02084071 1 42"
    # NLTK binary-searches the file, so it must be sorted.
    keys = list(senses)
    assert keys == sorted(keys)


def test_second_build_keeps_the_first(built: Path) -> None:
    # Another process may finish first; its layout is kept and no temp folder is left.
    source = find_source()
    assert source is not None
    before = (built / "index.sense").stat().st_mtime_ns
    assert build_wordnet(source, built.parent.parent) == built
    assert (built / "index.sense").stat().st_mtime_ns == before
    assert [p.name for p in built.parent.iterdir()] == ["wordnet"]


def test_build_names_missing_files(tmp_path: Path) -> None:
    (tmp_path / "data.noun").write_text("")
    with pytest.raises(WordNetUnavailableError, match="missing .*index.noun.*wordnet-base"):
        build_wordnet(tmp_path, tmp_path / "out")


def test_unavailable_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk

    # Nothing on NLTK's path and no database to build from.
    monkeypatch.setattr(nltk.data, "path", [])
    with pytest.raises(WordNetUnavailableError) as info:
        ensure_wordnet(tmp_path / "nltk_data", sources=[tmp_path / "no-wordnet"])
    message = str(info.value)
    assert "apt-get install wordnet-base" in message and "NLTK_DATA" in message
    assert not (tmp_path / "nltk_data").exists()


def test_cli_prints_the_folder(wordnet_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert str(wordnet_root) in capsys.readouterr().out

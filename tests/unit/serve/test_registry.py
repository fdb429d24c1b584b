"""Domain specs on the command line, and the byte-bounded LRU of loaded domains."""

from pathlib import Path

import pytest
import torch

from metarag.cli.serve import parse_bytes
from metarag.data.schema import Passage
from metarag.rag.model import CorpusState, RAGConfig
from metarag.serve.registry import (
    DomainAssets,
    DomainCache,
    DomainError,
    DomainRegistry,
    DomainSpec,
    UnknownDomain,
    parse_domain,
)


def test_parse_domain():
    assert parse_domain("bank=runs/a") == ("bank", Path("runs/a"), None)
    assert parse_domain("x.1=/a,index=/i") == ("x.1", Path("/a"), Path("/i"))
    for text, words in [("bank", "NAME=ADAPTED_DIR"), ("bank=", "NAME=ADAPTED_DIR"),
                        ("bank=a,foo=b", "unknown option 'foo=b'"), ("-x=a", "domain name"),
                        ("a b=c", "domain name"), ("x=a,index=", "unknown option")]:
        with pytest.raises(DomainError, match=words):
            parse_domain(text)


def test_parse_bytes():
    assert parse_bytes("1000") == 1000
    assert parse_bytes("2G") == 2 * 2**30 and parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1.5k") == 1536
    with pytest.raises(Exception, match="expected a size"):
        parse_bytes("lots")


def _spec(name):
    return DomainSpec(name, Path(name), Path(name), Path(name), RAGConfig())


def _assets(spec, weight_numel):
    corpus = CorpusState([Passage("p", "t", "x" * 100)], torch.zeros(1, 4))
    assets = DomainAssets(spec, {"w": torch.zeros(weight_numel)}, corpus)
    assets.measure()
    return assets


def test_the_cache_drops_least_recently_used_to_fit_its_bytes():
    a, b, c = _spec("a"), _spec("b"), _spec("c")
    one = _assets(a, 250).nbytes
    assert one == 250 * 4 + 16 + (100 + 1 + 1 + 100)
    cache = DomainCache(max_bytes=2 * one)
    assert cache.put(_assets(a, 250)) == [] and cache.put(_assets(b, 250)) == []
    assert cache.get(a) is not None  # a is now the most recently used
    evicted = cache.put(_assets(c, 250))
    assert [e.spec.name for e in evicted] == ["b"]
    assert cache.get(b) is None and list(cache.snapshot()) == [a.uid, c.uid]
    # One entry bigger than the bound stays: it is the one being served.
    assert [e.spec.name for e in cache.put(_assets(_spec("big"), 10_000))] == ["a", "c"]
    assert len(cache.snapshot()) == 1 and cache.evictions == 3
    # A re-registered domain (new uid) never finds the old entry.
    assert cache.get(_spec("big")) is None


def test_the_registry_names_the_known_domains():
    registry = DomainRegistry()
    assert registry.put(_spec("b")) and registry.put(_spec("a"))
    assert not registry.put(_spec("a"))
    with pytest.raises(UnknownDomain, match="unknown domain 'z'; known domains: a, b"):
        registry.get("z")
    registry.remove("a")
    assert registry.names() == ["b"]

"""Episode samplers: reproducible, support/query disjoint, exact resume, clear size errors."""

from __future__ import annotations

import itertools
import json

import pytest

from metarag.data.episodes import Episode, EpisodeSampler, MetaBatchSampler, TaskSampler
from metarag.data.schema import Passage, QAExample, Task
from metarag.data.synthetic import synthetic_suite
from metarag.errors import DataError


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return synthetic_suite(seed=0, n_entities=20, domains=["pharmacy", "legal", "history"])


def _ids(episode: Episode) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    return (tuple(e.id for e in episode.support), tuple(e.id for e in episode.query),
            episode.task_name)


def _tiny_task(n_train: int) -> Task:
    examples = [QAExample(id=f"q{i}", question=f"q{i}?", answers=("a",)) for i in range(n_train)]
    return Task(name="tiny", domain="d", language="en", corpus=[Passage("p", "a")],
                train=examples, dev=[], test=[])


def test_episode_shapes_and_disjoint_sets(tasks) -> None:
    sampler = EpisodeSampler(tasks[0], n_shot=4, n_query=8, seed=0)
    train_ids = {e.id for e in tasks[0].train}
    for episode in itertools.islice(sampler, 50):
        support, query, name = _ids(episode)
        assert len(support) == 4 and len(query) == 8 and name == "synthetic/pharmacy"
        assert not set(support) & set(query)
        assert len(set(support)) == 4 and len(set(query)) == 8
        assert set(support) | set(query) <= train_ids


def test_same_seed_same_episodes_other_seed_other_episodes(tasks) -> None:
    def run(seed: int) -> list:
        sampler = EpisodeSampler(tasks[0], n_shot=4, n_query=4, seed=seed)
        return [_ids(sampler.sample()) for _ in range(10)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert len(set(run(1))) == 10  # episodes vary within a run


def test_input_order_does_not_matter(tasks) -> None:
    examples = tasks[0].train
    a = EpisodeSampler(examples, n_shot=2, n_query=2, seed=0)
    b = EpisodeSampler(list(reversed(examples)), n_shot=2, n_query=2, seed=0)
    assert [_ids(a.sample()) for _ in range(5)] == [_ids(b.sample()) for _ in range(5)]
    assert a.sample().task_name == "examples"


def test_other_split(tasks) -> None:
    sampler = EpisodeSampler(tasks[0], n_shot=0, n_query=5, seed=0, split="test")
    episode = sampler.sample()
    assert episode.support == []
    assert {e.id for e in episode.query} <= {e.id for e in tasks[0].test}


def test_state_dict_resume_gives_the_identical_next_episodes(tasks) -> None:
    first = EpisodeSampler(tasks[0], n_shot=4, n_query=4, seed=7)
    for _ in range(13):
        first.sample()
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    expected = [_ids(first.sample()) for _ in range(5)]

    resumed = EpisodeSampler(tasks[0], n_shot=4, n_query=4, seed=999)  # seed comes from state
    resumed.load_state_dict(state)
    assert [_ids(resumed.sample()) for _ in range(5)] == expected


def test_resume_into_a_different_sampler_is_refused(tasks) -> None:
    state = EpisodeSampler(tasks[0], n_shot=4, n_query=4, seed=0).state_dict()
    with pytest.raises(ValueError, match="n_shot"):
        EpisodeSampler(tasks[0], n_shot=2, n_query=4, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="task_name"):
        EpisodeSampler(tasks[1], n_shot=4, n_query=4, seed=0).load_state_dict(state)


def test_too_small_split_names_task_split_and_counts() -> None:
    with pytest.raises(DataError) as err:
        EpisodeSampler(_tiny_task(5), n_shot=4, n_query=2, seed=0)
    msg = str(err.value)
    assert "'tiny'" in msg and "'train'" in msg and "5 examples" in msg and "6" in msg
    EpisodeSampler(_tiny_task(6), n_shot=4, n_query=2, seed=0).sample()  # exactly enough


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_shot"):
        EpisodeSampler(_tiny_task(5), n_shot=-1, n_query=2, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        EpisodeSampler(_tiny_task(5), n_shot=0, n_query=0, seed=0)


def test_duplicate_example_ids_are_refused() -> None:
    ex = QAExample(id="q", question="q?", answers=("a",))
    with pytest.raises(DataError, match="duplicate"):
        EpisodeSampler([ex, ex], n_shot=1, n_query=1, seed=0)


def test_meta_batches_are_reproducible_and_resumable(tasks) -> None:
    def make(seed: int = 0) -> MetaBatchSampler:
        return MetaBatchSampler(tasks, n_shot=2, n_query=3, meta_batch_size=4, seed=seed)

    a, b = make(), make()
    batches = [[_ids(e) for e in a.sample()] for _ in range(6)]
    assert batches == [[_ids(e) for e in b.sample()] for _ in range(6)]
    assert all(len(batch) == 4 for batch in batches)
    for batch in batches:
        for support, query, _ in batch:
            assert len(support) == 2 and len(query) == 3 and not set(support) & set(query)

    state = json.loads(json.dumps(a.state_dict()))
    expected = [[_ids(e) for e in a.sample()] for _ in range(3)]
    resumed = make(seed=123)
    resumed.load_state_dict(state)
    assert [[_ids(e) for e in batch] for batch in itertools.islice(resumed, 3)] == expected
    assert TaskSampler is MetaBatchSampler


def test_task_choice_covers_every_task_and_can_follow_size(tasks) -> None:
    sampler = MetaBatchSampler(tasks, n_shot=1, n_query=1, meta_batch_size=8, seed=0)
    seen = {e.task_name for batch in itertools.islice(sampler, 20) for e in batch}
    assert seen == {t.name for t in tasks}
    assert all(p == pytest.approx(1 / 3) for p in sampler.task_probabilities.values())

    big, small = _tiny_task(30), _tiny_task(10)
    small.name = "small"
    prop = MetaBatchSampler([big, small], n_shot=1, n_query=1, meta_batch_size=1, seed=0,
                            weighting="proportional")
    assert prop.task_probabilities == {"tiny": 0.75, "small": 0.25}
    names = [b[0].task_name for b in itertools.islice(prop, 400)]
    assert 0.65 < names.count("tiny") / 400 < 0.85


def test_meta_batch_errors(tasks) -> None:
    with pytest.raises(DataError, match="'tiny'"):
        MetaBatchSampler([*tasks, _tiny_task(3)], n_shot=2, n_query=2, meta_batch_size=2, seed=0)
    with pytest.raises(ValueError, match="unique"):
        MetaBatchSampler([tasks[0], tasks[0]], n_shot=1, n_query=1, meta_batch_size=2, seed=0)
    with pytest.raises(ValueError, match="weighting"):
        MetaBatchSampler(tasks, n_shot=1, n_query=1, meta_batch_size=2, seed=0, weighting="x")
    sampler = MetaBatchSampler(tasks, n_shot=1, n_query=1, meta_batch_size=2, seed=0)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match="meta_batch_size"):
        MetaBatchSampler(tasks, n_shot=1, n_query=1, meta_batch_size=3, seed=0).load_state_dict(
            state)

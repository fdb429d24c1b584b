"""metarag.gym: the registered environment's contract, its spaces, and agents scored by the loop."""

from __future__ import annotations

import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import metarag.gym
from metarag.data.schema import Passage, QAExample, Task
from metarag.errors import DataError
from metarag.gym import ENV_ID, FewShotQAEnv
from metarag.gym.agents import (
    AdaptedRAGAgent,
    CopySpanAgent,
    FunctionAgent,
    RAGAgent,
    run_episodes,
)
from metarag.gym.spaces import CHARSET, MAX_TEXT, REPLACEMENT, fit_text


def _make(**kwargs) -> gymnasium.Env:
    return gymnasium.make(ENV_ID, **{"shots": 2, "n_questions": 3, **kwargs})


class _Perfect:
    """Answers every question with its first reference, found by the id in ``info``."""

    def __init__(self, env: gymnasium.Env) -> None:
        self.answers = {e.id: e.answers[0] for t in env.unwrapped.tasks for e in t.examples}

    def reset(self, observation, info) -> None:
        pass

    def act(self, observation, info) -> str:
        return self.answers[info["question_id"]]


def _chinese_task() -> Task:
    # '𫚭' is outside the BMP (CJK extension E), as a few CMRC 2018 characters are.
    corpus = [Passage(f"p{i}", f"第{i}号鱼名叫𫚭{i}，产于长江。", title=f"鱼{i}") for i in range(6)]
    examples = [QAExample(f"q{i}", f"第{i}号鱼叫什么名字？", (f"𫚭{i}",), (f"p{i}",), "zh")
                for i in range(6)]
    return Task("toy-zh", "fish", "zh", corpus, examples[:3], [], examples[3:]).validate()


def _episode(env: gymnasium.Env, seed: int | None) -> tuple:
    """(task, support ids, question ids) of one episode."""
    _, info = env.reset(seed=seed)
    support = tuple(e.id for e in info["support_examples"])
    ids = [info["question_id"]]
    while True:
        _, _, terminated, _, info = env.step("x")
        if terminated:
            break
        ids.append(info["question_id"])
    return info["task"], support, tuple(ids)


# ---- registration and the gymnasium checker -----------------------------------------


def test_import_registers_the_id_and_make_builds_the_env():
    assert gymnasium.spec(ENV_ID).entry_point == "metarag.gym.env:FewShotQAEnv"
    env = _make()
    assert isinstance(env.unwrapped, FewShotQAEnv)
    assert metarag.gym.FewShotQAEnv is FewShotQAEnv


def test_gymnasium_env_checker_passes_without_warnings():
    env = _make(passages="gold")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker reports problems as warnings
        check_env(env.unwrapped)


# ---- reset / step ---------------------------------------------------------------------


def test_reset_and_step_follow_the_contract_and_terminate_after_n_questions():
    env = _make(shots=3, n_questions=4, passages="gold")
    obs, info = env.reset(seed=7)
    assert obs in env.observation_space
    assert set(obs) == {"task", "question", "passages", "support"}
    assert obs["task"] == info["task"] and obs["question"] and len(obs["passages"]) == 1
    assert len(obs["support"]) == 3 == len(info["support_examples"])
    assert [s["answer"] for s in obs["support"]] == [e.answers[0]
                                                     for e in info["support_examples"]]
    task = next(t for t in env.unwrapped.tasks if t.name == info["task"])
    assert info["corpus"] == tuple(task.corpus)
    support = {e.id for e in info["support_examples"]}
    asked = {info["question_id"]}
    for step in range(1, 5):
        obs, reward, terminated, truncated, info = env.step("250 mg twice daily")
        assert isinstance(reward, float) and 0.0 <= reward <= 1.0
        assert terminated == (step == 4) and truncated is False
        assert obs in env.observation_space
        asked.add(info["question_id"])
    assert obs["question"] == "" and obs["passages"] == () and info["question_id"] is None
    assert len(asked - {None}) == 4  # four distinct questions
    assert not asked & support  # none of them in the support set
    with pytest.raises(RuntimeError, match="terminated"):
        env.unwrapped.step("again")


def test_same_seed_repeats_the_episodes_and_other_seeds_differ():
    def run(seed: int) -> list[tuple]:
        env = _make()
        return [_episode(env, seed if i == 0 else None) for i in range(4)]

    first = run(3)
    assert run(3) == first
    assert run(4) != first
    assert len(set(first)) == 4  # unseeded resets continue the generator: new episodes


def test_the_task_can_be_picked_in_the_reset_options():
    env = _make()
    _, info = env.reset(seed=0, options={"task": "synthetic/legal"})
    assert info["task"] == "synthetic/legal"
    with pytest.raises(ValueError, match="options\\['task'\\]='nope'"):
        env.reset(options={"task": "nope"})
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"shots": 3})


# ---- rewards ---------------------------------------------------------------------------


def test_a_perfect_agent_scores_one_per_step_and_a_wrong_one_zero():
    env = _make(n_questions=5)
    perfect = _Perfect(env)
    obs, info = env.reset(seed=1)
    for _ in range(5):
        obs, reward, _, _, info = env.step(perfect.act(obs, info))
        assert reward == 1.0 and info["exact_match"] == 1.0
    assert run_episodes(env, perfect, 3, seed=2) == 1.0
    assert run_episodes(env, FunctionAgent(lambda obs: "zzqx wvvk"), 3, seed=2) == 0.0


def test_chinese_text_is_in_the_spaces_and_scored_by_characters():
    env = gymnasium.make(ENV_ID, tasks=[_chinese_task()], shots=1, n_questions=2,
                         passages="gold")
    assert run_episodes(env, _Perfect(env), 2, seed=0) == 1.0
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space and "𫚭" in obs["passages"][0]
    example = next(e for e in env.unwrapped.tasks[0].examples if e.id == info["question_id"])
    _, reward, *_ = env.step(example.answers[0][:1] + "x")  # "𫚭x" vs "𫚭3": 1 of 2 characters
    assert reward == pytest.approx(0.5)


@pytest.mark.shared_data
def test_a_held_out_shared_dataset_is_an_episode_source(shared_data):
    env = gymnasium.make(ENV_ID, tasks=[shared_data / "cmrc2018"], shots=4, n_questions=4,
                         passages="bm25", k=2)
    obs, info = env.reset(seed=0)
    assert info["task"] == "cmrc2018" and info["language"] == "zh"
    assert obs in env.observation_space and 1 <= len(obs["passages"]) <= 2
    assert run_episodes(env, _Perfect(env), 2, seed=0) == 1.0


# ---- the model-free baseline -----------------------------------------------------------


def test_copy_span_agent_copies_from_the_shown_passages():
    agent = CopySpanAgent()
    agent.reset({}, {"language": "en"})
    obs = {"question": "What is the standard adult dose of Velazine?",
           "passages": ("Velazine: Velazine is an antiviral. The standard adult dose of "
                        "Velazine is 250 mg twice daily. Store below 25 degrees.",)}
    assert agent.act(obs, {}) == "250 mg twice daily"
    assert agent.act({"question": obs["question"], "passages": ()}, {}) == ""
    assert run_episodes(_make(passages="gold"), CopySpanAgent(), 4, seed=0) > 0.1
    assert run_episodes(_make(), CopySpanAgent(), 2, seed=0) == 0.0  # no passages shown


# ---- spaces ----------------------------------------------------------------------------


def test_the_charset_covers_the_data_and_fit_text_keeps_observations_in_it():
    for char in ("a", " ", "\n", "\t", "中", "€", "°", "\uf06e", "𫚭", "🙂"):
        assert char in CHARSET, repr(char)
    assert "\x00" not in CHARSET and "\ud800" not in CHARSET
    assert fit_text("ok\x00中") == "ok" + REPLACEMENT + "中"
    assert len(fit_text("x" * (MAX_TEXT + 5))) == MAX_TEXT
    env = _make()
    assert env.action_space.contains("答案 250 mg") and not env.action_space.contains(3)
    env.action_space.seed(0)
    sample = env.action_space.sample()
    env.action_space.seed(0)
    assert env.action_space.sample() == sample
    assert env.observation_space["question"] is not env.action_space  # own generators


# ---- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"shots": -1}, "shots"),
    ({"n_questions": 0}, "n_questions"),
    ({"passages": "dense"}, "passages"),
    ({"passages": "bm25", "k": 0}, "k must be"),
    ({"split": "valid"}, "split"),
    ({"tasks": []}, "tasks is empty"),
])
def test_bad_arguments_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FewShotQAEnv(**kwargs)


def test_a_task_too_small_for_the_episode_is_named():
    with pytest.raises(DataError, match="toy-zh.*n_questions=5"):
        FewShotQAEnv([_chinese_task()], shots=1, n_questions=5)


def test_step_needs_a_reset_and_a_string_action():
    env = FewShotQAEnv(shots=1, n_questions=1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("x")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="str, got int"):
        env.step(3)


# ---- metarag model agents (tiny models) ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_built(tiny_encoder_dir):
    """A tiny Gemma-3 RAG model with LoRA (r=2), greedy 'fast' decoding of a few tokens."""
    from metarag.generation.adapters import LoRAConfig
    from metarag.rag.build import ModelConfig, build_model
    from metarag.rag.model import RAGConfig

    return build_model(ModelConfig(
        encoder=str(tiny_encoder_dir), generator="tiny", generator_kind="causal",
        lora=LoRAConfig(r=2), max_source_length=64, max_target_length=12,
        rag=RAGConfig(k=2, max_new_tokens=4, decoding="fast")))


def test_a_tiny_rag_agent_plays_an_episode(tiny_built):
    env = _make(tasks=["synthetic/pharmacy", "synthetic/legal"], n_questions=2)
    score = run_episodes(env, RAGAgent(tiny_built, in_context=True), 2, seed=0)
    assert 0.0 <= score <= 1.0
    assert tiny_built.model.passages  # pointed at an episode's corpus
    assert len(tiny_built.model.demos) == 2  # the support set, in context


def test_the_adapted_agent_adapts_on_the_support_set_and_keeps_the_start(tiny_built):
    import torch

    from metarag.meta.adapt import AdaptConfig

    start = {k: v.detach().clone() for k, v in tiny_built.model.state_dict().items()}
    agent = AdaptedRAGAgent(tiny_built, AdaptConfig(steps=2, lr=0.5, params=["lora"]))
    env = _make(tasks=["synthetic/pharmacy"], n_questions=2)
    assert 0.0 <= run_episodes(env, agent, 1, seed=0) <= 1.0
    assert agent.adapted and all("lora" in k for k in agent.adapted)
    assert any(not torch.equal(v, start[k]) for k, v in agent.adapted.items())
    for k, v in tiny_built.model.state_dict().items():  # swapped in only while answering
        assert torch.equal(v, start[k]), k
    zero_shot = gymnasium.make(ENV_ID, tasks=["synthetic/pharmacy"], shots=0, n_questions=1)
    run_episodes(zero_shot, agent, 1, seed=0)
    assert agent.adapted == {}  # nothing to adapt on


def test_the_adapted_in_context_agent_adapts_without_demos_then_answers_with_them(tiny_built):
    import torch

    from metarag.meta.adapt import AdaptConfig

    config = AdaptConfig(steps=2, lr=0.5, params=["lora"])
    env = _make(tasks=["synthetic/pharmacy"], n_questions=1)
    plain, with_demos = AdaptedRAGAgent(tiny_built, config), AdaptedRAGAgent(
        tiny_built, config, in_context=True)
    observation, info = env.reset(seed=0)
    plain.reset(observation, info)
    with_demos.reset(observation, info)
    # The same weights as adapting on plain prompts; the demos are on for answering.
    for k, v in plain.adapted.items():
        torch.testing.assert_close(with_demos.adapted[k], v, rtol=0, atol=0)
    assert len(tiny_built.model.demos) == len(info["support_examples"]) > 0


def test_an_agent_adapting_in_context_answers_in_context(tiny_built):
    from metarag.meta.adapt import AdaptConfig

    config = AdaptConfig(steps=1, lr=0.5, params=["lora"], in_context=True)
    assert AdaptedRAGAgent(tiny_built, config).in_context
    assert not AdaptedRAGAgent(tiny_built, AdaptConfig(params=["lora"])).in_context

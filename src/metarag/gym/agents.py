"""Agents for `FewShotQAEnv`, and the standard loop that scores any of them.

An agent is anything with ``reset(observation, info)`` (a new task: adapt here)
and ``act(observation, info) -> str`` (the answer to ``observation["question"]``);
`run_episodes` plays it and returns its mean reward. Provided:

- `FunctionAgent`: wraps ``answer(observation) -> str``;
- `CopySpanAgent`: no model; copies the words of the shown passage sentence that
  best overlaps the question, minus the question's own words (needs the env's
  ``passages="gold"`` or ``"bm25"``);
- `RAGAgent`: a metarag model (`BuiltModel`) answering zero-shot, or with the
  support set as in-context examples, retrieving from the episode's corpus;
- `AdaptedRAGAgent`: the same model adapted on each episode's support set by
  `metarag.meta.adapt.adapt_params` (the inner loop test-time adaptation and
  `metarag adapt` use), the starting weights kept unchanged.

The model agents import torch when they run, not when this module is imported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from metarag.evaluation.metrics import LANGUAGES, normalize_answer

if TYPE_CHECKING:
    import gymnasium as gym
    from torch import Tensor

    from metarag.meta.adapt import AdaptConfig
    from metarag.rag.build import BuiltModel

Observation = dict[str, Any]
Info = dict[str, Any]

# Sentence ends: Latin ., ! and ? before a space ("4.2 million" stays whole); CJK 。！？.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


class Agent(Protocol):
    """What `run_episodes` plays."""

    def reset(self, observation: Observation, info: Info) -> None:
        """A new episode (a new task) starts; adapt to it here."""

    def act(self, observation: Observation, info: Info) -> str:
        """The answer to ``observation["question"]``."""


def run_episodes(env: gym.Env, agent: Agent, n: int, *, seed: int | None = None) -> float:
    """Play ``n`` episodes; the mean reward per step (the mean token F1, in [0, 1]).

    Args:
        env: A `FewShotQAEnv`, wrapped or not (e.g. from ``gymnasium.make``).
        agent: Any `Agent`.
        n: Episodes to play.
        seed: Seeds the first reset, so the whole sequence of episodes repeats; None
            continues the environment's generator.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 episodes, got {n}")
    rewards: list[float] = []
    for episode in range(n):
        observation, info = env.reset(seed=seed if episode == 0 else None)
        agent.reset(observation, info)
        done = False
        while not done:
            observation, reward, terminated, truncated, info = env.step(
                agent.act(observation, info))
            rewards.append(float(reward))
            done = terminated or truncated
    return sum(rewards) / len(rewards)


class FunctionAgent:
    """An agent from a function of the observation; nothing happens at reset."""

    def __init__(self, answer: Callable[[Observation], str]) -> None:
        self.answer = answer

    def reset(self, observation: Observation, info: Info) -> None:
        pass

    def act(self, observation: Observation, info: Info) -> str:
        return self.answer(observation)


class CopySpanAgent:
    """Baseline without a model: a span copied from the passages shown with the question.

    Picks the passage sentence sharing the most normalised tokens (words; characters
    for Chinese and Japanese) with the question and answers with its tokens that are
    not in the question: "The standard adult dose of Velazine is 250 mg twice
    daily." asked "What is the standard adult dose of Velazine?" gives "250 mg twice
    daily". Answers "" when no passage is shown.
    """

    def __init__(self) -> None:
        self.language = "en"

    def reset(self, observation: Observation, info: Info) -> None:
        language = info.get("language", "en")
        self.language = language if language in LANGUAGES else "en"

    def act(self, observation: Observation, info: Info) -> str:
        asked = set(normalize_answer(observation["question"], language=self.language))
        best: list[str] = []
        best_overlap = 0
        for passage in observation["passages"]:
            for sentence in _SENTENCE_END.split(passage):
                tokens = normalize_answer(sentence, language=self.language)
                overlap = len(asked.intersection(tokens))
                if overlap > best_overlap:
                    best, best_overlap = tokens, overlap
        joiner = "" if self.language in ("zh", "ja") else " "
        return joiner.join(t for t in best if t not in asked)


class RAGAgent:
    """A metarag model answering each question from the episode's corpus, without adapting.

    The agent points ``built`` at each new task's corpus (`BuiltModel.use_corpus`,
    in the task's language) and sets its in-context demos, so it owns the model
    while it plays. The environment's ``passages`` are not used: the model retrieves.

    Args:
        built: The model, e.g. from `metarag.rag.build.load_trained` or `build_model`.
        in_context: Put the episode's support set in every prompt (in-context k-shot).
        k: Passages retrieved per question; None for the model's ``rag.k``.
    """

    def __init__(self, built: BuiltModel, *, in_context: bool = False,
                 k: int | None = None) -> None:
        self.built, self.in_context, self.k = built, in_context, k
        self._task: str | None = None

    def reset(self, observation: Observation, info: Info) -> None:
        if info["task"] != self._task:  # embed each corpus once, not once per episode
            self.built.use_corpus(info["corpus"], language=info["language"])
            self._task = info["task"]
        support = info["support_examples"] if self.in_context else ()
        self.built.model.use_demos(support)

    def act(self, observation: Observation, info: Info) -> str:
        from metarag.evaluation.qa import answer_questions

        return answer_questions(self.built, [observation["question"]], k=self.k)[0].answer


class AdaptedRAGAgent(RAGAgent):
    """A metarag model adapted on each episode's support set before it answers.

    At reset the selected weights take ``config.steps`` SGD steps on the support
    set (`metarag.meta.adapt.adapt_params`, as ``metarag adapt`` does); they are
    swapped in only while a question is answered (`swapped_params`), so ``built``
    keeps its starting weights and every episode adapts from the same start.
    With no support examples (``shots=0``) the model answers unadapted.

    Args:
        built: The starting model (a meta-trained checkpoint, or a base model).
        config: Steps, learning rate and adapted weights; default `AdaptConfig()`
            (LoRA: set ``params=["decoder"]`` for a BERT2BERT generator).
        learned_lrs: Meta-SGD's per-parameter rates, replacing ``config.lr``.
        in_context, k: As in `RAGAgent`; ``in_context`` is on whenever
            ``config.in_context`` is (a model adapted with the support set in its
            prompts is asked with it, as `metarag.meta.adapt.adapt` returns it).
    """

    def __init__(self, built: BuiltModel, config: AdaptConfig | None = None, *,
                 learned_lrs: Mapping[str, Tensor] | None = None, in_context: bool = False,
                 k: int | None = None) -> None:
        from metarag.meta.adapt import AdaptConfig

        config = config or AdaptConfig()
        super().__init__(built, in_context=in_context or config.in_context, k=k)
        self.config = config
        self.learned_lrs = learned_lrs
        self.adapted: dict[str, Tensor] = {}

    def reset(self, observation: Observation, info: Info) -> None:
        from metarag.meta.adapt import adapt_params

        super().reset(observation, info)
        support = info["support_examples"]
        # Adapt with the prompts the config says (the support set in them only with
        # config.in_context), then answer with the demos `RAGAgent.reset` chose, as the
        # benchmark's X+in_context does.
        self.adapted = (adapt_params(self.built.model, support, self.config,
                                     learned_lrs=self.learned_lrs) if support else {})

    def act(self, observation: Observation, info: Info) -> str:
        from metarag.meta.adapt import swapped_params

        with swapped_params(self.built.model, self.adapted):
            return super().act(observation, info)

"""FewShotQAEnv: every episode is a new QA task, every step one question, reward = token F1.

The original design tests adaptation to new tasks in an OpenAI Gym loop; this
is that loop on `gymnasium`. At ``reset`` a task is drawn (uniformly, from the
environment's ``np_random``) with a k-shot support set from its train split; an
agent adapts on it (or ignores it), then answers ``n_questions`` questions from
the query split, one per ``step``. The reward is the SQuAD token F1 of the answer
against the question's references (`metarag.evaluation.metrics.token_f1_scores`,
in [0, 1], best reference; characters for Chinese), so the mean reward of an
episode is what `metarag evaluate` reports as F1/100 on those questions.

Observation (a dict; every string is a `metarag.gym.spaces` text, at most
``MAX_TEXT`` characters):

- ``task``: the task's name, e.g. ``"synthetic/legal"`` or ``"agxqa"``;
- ``question``: the question to answer now ("" in the final observation);
- ``passages``: a tuple of passage texts for it (see `metarag.gym.passages`);
- ``support``: a tuple of ``{"question", "answer"}`` dicts, the k shots (first
  reference answer each); the same in every observation of an episode.

Action: the answer text. The episode terminates after ``n_questions`` steps; it
never truncates. ``info`` carries what does not fit a space: at reset the
corpus and the support set as `Passage`/`QAExample` objects (for agents that
retrieve or adapt themselves), and at every step the references and exact
match of the question just answered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

from metarag.data.schema import QAExample
from metarag.evaluation.metrics import LANGUAGES, exact_match_scores, token_f1_scores
from metarag.gym.passages import PassageSource
from metarag.gym.spaces import action_space, fit_text, observation_space
from metarag.gym.tasks import EpisodePlan, TaskSource, draw_episode, resolve_tasks, task_pools

log = logging.getLogger(__name__)
RESET_OPTIONS = ("task",)


class FewShotQAEnv(gym.Env[dict[str, Any], str]):
    """Few-shot QA episodes over tasks; registered as ``metarag/FewShotQA-v0``.

    Args:
        tasks: Task sources for `metarag.data.loaders.load_task` or loaded `Task`
            objects; None (default) for the embedded synthetic suite (8 domains).
        shots: Support examples per episode (0: zero-shot, an empty support set).
        n_questions: Questions per episode; the episode terminates after them.
        split: Where questions come from: "test" (default), "dev" or "train"
            (then drawn apart from the support set).
        passages: Passages shown with each question: None (default: none; the
            agent retrieves from the corpus in ``info``), "gold" or "bm25".
        k: Passages per question with ``passages="bm25"``.
        data_seed: Split seed for loading ``tasks`` (the synthetic suite's seed).
            Episodes are seeded by ``reset(seed=...)``.

    Raises:
        ValueError: A bad argument, naming it; DataError when a task is too small
            for ``shots`` + ``n_questions``.
    """

    metadata = {"render_modes": []}

    def __init__(self, tasks: TaskSource | Sequence[TaskSource] | None = None, *,
                 shots: int = 4, n_questions: int = 8, split: str = "test",
                 passages: str | None = None, k: int = 3, data_seed: int = 0) -> None:
        if shots < 0:
            raise ValueError(f"shots must be >= 0, got {shots}")
        if n_questions < 1:
            raise ValueError(f"n_questions must be >= 1, got {n_questions}")
        self.shots, self.n_questions, self.split = shots, n_questions, split
        self.passage_source = PassageSource(passages, k)
        self.tasks = resolve_tasks(tasks, seed=data_seed)
        self._pools = [task_pools(t, shots=shots, n_questions=n_questions, split=split)
                       for t in self.tasks]
        self._by_name = {t.name: i for i, t in enumerate(self.tasks)}
        for t in self.tasks:
            if t.language not in LANGUAGES:
                log.warning("%s: F1 supports %s, not %r; rewards use the English rules",
                            t.name, ", ".join(LANGUAGES), t.language)
        self.observation_space = observation_space()
        self.action_space = action_space()
        self._plan: EpisodePlan | None = None
        self._step = 0

    # ---- the gymnasium API -----------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode on a new task.

        Args:
            seed: Seeds the environment's generator: the same seed gives the same
                task, support set and questions; later unseeded resets continue it.
            options: ``{"task": name}`` picks the task instead of drawing it.

        Raises:
            ValueError: An unknown option or task name.
        """
        super().reset(seed=seed)
        options = options or {}
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; accepted: {RESET_OPTIONS}")
        if "task" in options:
            if options["task"] not in self._by_name:
                raise ValueError(f"options['task']={options['task']!r} is not a task of this "
                                 f"environment; choose from {sorted(self._by_name)}")
            index = self._by_name[options["task"]]
        else:
            index = int(self.np_random.integers(len(self.tasks)))
        self._plan = draw_episode(self._pools[index], self.np_random, shots=self.shots,
                                  n_questions=self.n_questions)
        self._step = 0
        task = self._plan.task
        info = {"task": task.name, "domain": task.domain, "language": task.language,
                "corpus": tuple(task.corpus), "support_examples": self._plan.support,
                "question_id": self._plan.questions[0].id}
        return self._observation(), info

    def step(self, action: str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Score the answer to the current question and show the next one.

        Returns:
            ``(observation, reward, terminated, truncated, info)``: reward the token
            F1 in [0, 1]; terminated after the episode's last question;
            info ``{"task", "answered_id", "references", "exact_match", "question_id"}``
            (``question_id`` of the next question, None at the end).

        Raises:
            RuntimeError: Before ``reset`` or after the episode terminated.
            TypeError: The action is not a string.
        """
        if self._plan is None:
            raise RuntimeError("call reset() before step()")
        if self._step >= len(self._plan.questions):
            raise RuntimeError("the episode has terminated; call reset() to start another")
        if not isinstance(action, str):
            raise TypeError(f"the action must be the answer as a str, got "
                            f"{type(action).__name__}")
        example = self._plan.questions[self._step]
        references = [list(example.answers)]
        language = self._language()
        reward = token_f1_scores([action], references, language=language)[0]
        exact = exact_match_scores([action], references, language=language)[0]
        self._step += 1
        following = self._current()
        terminated = following is None
        info = {"task": self._plan.task.name, "answered_id": example.id,
                "references": tuple(example.answers), "exact_match": float(exact),
                "question_id": None if terminated else following.id}
        return self._observation(), float(reward), terminated, False, info

    # ---- helpers ---------------------------------------------------------------------

    def _current(self) -> QAExample | None:
        assert self._plan is not None
        questions = self._plan.questions
        return questions[self._step] if self._step < len(questions) else None

    def _language(self) -> str:
        assert self._plan is not None
        language = self._plan.task.language
        return language if language in LANGUAGES else "en"

    def _observation(self) -> dict[str, Any]:
        # Fresh dicts and tuples every call: users may keep and change what they get.
        assert self._plan is not None
        example = self._current()
        passages = () if example is None else self.passage_source(self._plan.task, example)
        return {
            "task": fit_text(self._plan.task.name),
            "question": "" if example is None else fit_text(example.question),
            "passages": tuple(fit_text(p) for p in passages),
            "support": tuple({"question": fit_text(e.question), "answer": fit_text(e.answers[0])}
                             for e in self._plan.support),
        }

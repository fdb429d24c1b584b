"""End-to-end QA evaluation of a RAG model: answer metrics and its own retrieval recall.

`evaluate_qa` points a built model at a task's corpus, answers a split's
questions with `RAGModel.answer` (retrieve, generate, cite) and scores them:

- answers: exact match, token F1, BLEU, ROUGE-1/2/L, METEOR (`score_answers`,
  0-100) against every reference answer of each example;
- retrieval: recall@k and MRR (0-100, like the answer metrics, so one table
  reads alike) of the model's *own* query encoder, which training may have
  moved, against the gold passage ids. Questions without gold ids are left
  out of these two and counted, never scored as misses.

An untrained model from `build_model` evaluates the same way: that is the
zero-shot baseline. Over-long questions and passages are truncated with a
warning, never an error; empty questions are an error naming the example.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarag.data.schema import QAExample, Task
from metarag.errors import DataError
from metarag.evaluation.metrics import LANGUAGES, score_answers
from metarag.evaluation.retrieval import mean_reciprocal_rank, recall_at_k

if TYPE_CHECKING:
    import torch

    from metarag.rag.build import BuiltModel
    from metarag.rag.model import Answer

log = logging.getLogger(__name__)

ANSWER_METRICS = ("exact_match", "f1", "bleu", "rouge1", "rouge2", "rougeL", "meteor")
# Table headers; metric keys not listed here are shown under their own name.
_LABELS = {"exact_match": "EM", "f1": "F1", "bleu": "BLEU", "rouge1": "ROUGE-1",
           "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "meteor": "METEOR", "mrr": "MRR"}
METRICS_FILE, TABLE_FILE, PREDICTIONS_FILE = "metrics.json", "metrics.md", "predictions.jsonl"


@dataclass
class QAPrediction:
    """One answered example, as written to predictions.jsonl."""

    id: str
    question: str
    prediction: str
    references: list[str]
    cited_passage_ids: list[str]   # best first (by p(z|x,y))
    gold_passage_ids: list[str]
    # The cited passages themselves ({"id", "title", "text"}, same order), so a reader
    # such as `metarag review` can show them; files written before this field lack it.
    passages: list[dict[str, str]] = field(default_factory=list)


@dataclass
class QAResult:
    """Scores of one model on one task split.

    Attributes:
        task, split: What was answered.
        n: Examples answered.
        metrics: ``exact_match``, ``f1``, ``bleu``, ``rouge1``, ``rouge2``, ``rougeL``,
            ``meteor``, ``recall@k`` per cut-off and ``mrr`` (over the top
            ``mrr_cutoff``), all 0-100; recall and MRR are None when no
            example has gold passages.
        seconds: Wall time of answering (retrieval + generation), not scoring.
        answers_per_second: ``n / seconds``.
        retrieval_questions: Examples with gold passage ids (scored for recall).
        no_gold: Examples without them (left out of recall and MRR).
        language: The language the answers were scored as (see `evaluate_qa`).
        mrr_cutoff: MRR counts gold passages ranked within this many.
        predictions: Per-example answers and citations.
    """

    task: str
    split: str
    n: int
    metrics: dict[str, float | None]
    seconds: float
    answers_per_second: float
    retrieval_questions: int
    no_gold: int
    language: str
    mrr_cutoff: int
    predictions: list[QAPrediction] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-example predictions (those go to predictions.jsonl)."""
        out = asdict(self)
        del out["predictions"]
        return out


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout: answers and rankings are deterministic), restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def warn_if_truncated(encoder: Any, texts: Sequence[str], what: str) -> int:
    """Log one warning when texts exceed an encoder's token limit (they are cut, not refused).

    Args:
        encoder: A `DenseEncoder` (its ``tokenizer`` and ``max_length``).
        texts: The texts it is about to embed.
        what: Plural noun for the message, e.g. "questions".

    Returns:
        How many texts are longer than ``encoder.max_length`` tokens.
    """
    if not texts:
        return 0
    limit = encoder.max_length
    # One token over the limit is enough to tell, without tokenising whole long texts.
    ids = encoder.tokenizer(list(texts), truncation=True, max_length=limit + 1)["input_ids"]
    long = sum(len(x) > limit for x in ids)
    if long:
        log.warning("%d of %d %s exceed the encoder's max_length=%d tokens; their ends are "
                    "cut for retrieval (the generator warns separately if its input is cut)",
                    long, len(texts), what, limit)
    return long


def answer_questions(built: BuiltModel, questions: Sequence[str], *, k: int | None = None,
                     batch_size: int = 24, show_progress: bool = False,
                     ids: Sequence[str] | None = None) -> list[Answer]:
    """Answer questions with cited passages from the model's current corpus, in batches.

    Args:
        built: A model whose corpus is set (`BuiltModel.use_corpus`).
        questions: The questions; none may be empty.
        k: Passages retrieved per question; None for the model's ``config.k``.
        batch_size: Questions per `RAGModel.answer` call.
        show_progress: Show a progress bar over questions.
        ids: Names for the questions in error messages (default: their positions).

    Raises:
        ValueError: No questions, an empty question (named), a non-positive batch
            size, or a model without a corpus.
    """
    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, not one string; wrap it: [q]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not questions:
        raise ValueError("no questions to answer")
    for i, q in enumerate(questions):
        if not q or not q.strip():
            name = f"{ids[i]!r}" if ids is not None else f"at position {i}"
            raise ValueError(f"question {name} is empty; give it text or drop it")
    model = built.model
    if not model.passages:
        raise ValueError("the model has no corpus to retrieve from; call "
                         "built.use_corpus(passages) first")
    # RAGModel keeps its query-side DenseEncoder private; it truncates silently.
    warn_if_truncated(model.query_encoder, questions, "questions")
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(questions), desc="Answering", unit="question")
    answers: list[Answer] = []
    try:
        with _eval_mode(model):
            for start in range(0, len(questions), batch_size):
                batch = list(questions[start:start + batch_size])
                answers += model.answer(batch, k=k)
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return answers


def evaluate_qa(built: BuiltModel, task: Task, *, split: str = "test",
                max_examples: int | None = None, batch_size: int = 24,
                ks: Sequence[int] = (1, 5, 20), show_progress: bool = False,
                in_context: int = 0, demos: Sequence[QAExample] | None = None) -> QAResult:
    """Answer a task split with the model and score answers and retrieval.

    The model's corpus becomes the task's corpus (embedded by its frozen passage
    encoder). Works on a trained model (`load_trained`) and on an untrained one
    straight from `build_model` (the zero-shot baseline); the model's train/eval
    mode is restored afterwards.

    Answers are scored in the task's language; a language the metrics do not
    support (anything but en, zh, ja) is scored with the English rules, with a
    warning, and ``QAResult.language`` says so.

    Args:
        built: The model and its passage encoder.
        task: Corpus and QA splits.
        split: "train", "dev" or "test".
        max_examples: Answer only the first N examples of the split (splits are
            already shuffled, so this is a fixed random subset); None for all.
        batch_size: Questions per `RAGModel.answer` call.
        ks: Recall cut-offs; MRR counts the top ``max(ks)``.
        show_progress: Progress bars for embedding the corpus and answering.
        in_context: Put the first this many examples of ``demos`` in every prompt
            (in-context k-shot, `RAGModel.use_demos`, after the task's corpus is in
            place, so each demo shows its passage); 0: the model's own demos, if any.
            The model's own demos are restored afterwards.
        demos: The examples ``in_context`` draws from; default: the task's train split.

    Raises:
        DataError: The split (after ``max_examples``) holds no examples.
        ValueError: Bad ``max_examples``/``ks``/``batch_size``, or an empty question
            (named by example id).
    """
    import torch

    from metarag.retrieval import passage_text

    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}")
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {list(ks)}")
    examples = task.split(split)[:max_examples]
    if not examples:
        raise DataError(f"task {task.name!r}", f"split {split!r}",
                        "no examples to evaluate; choose another split")
    language = task.language
    if language not in LANGUAGES:
        log.warning("%s: answer metrics support %s, not %r; scoring with the English rules",
                    task.name, ", ".join(LANGUAGES), language)
        language = "en"

    warn_if_truncated(built.passage_encoder, [passage_text(p) for p in task.corpus], "passages")
    built.use_corpus(task.corpus, show_progress=show_progress, language=task.language)

    questions = [e.question for e in examples]
    own_demos = built.model.demos
    start = time.perf_counter()
    try:
        if in_context:
            built.model.use_demos(task.train if demos is None else demos, in_context)
        answers = answer_questions(built, questions, batch_size=batch_size,
                                   show_progress=show_progress, ids=[e.id for e in examples])
    finally:
        built.model.demos = own_demos
    seconds = time.perf_counter() - start

    references = [list(e.answers) for e in examples]
    metrics: dict[str, float | None] = dict(score_answers(
        [a.answer for a in answers], references, language=language))

    # Retrieval as the model itself ranks (its query encoder may be trained).
    scored = [e for e in examples if e.gold_passage_ids]
    depth = max(ks)
    ranked: list[list[str]] = []
    with torch.no_grad(), _eval_mode(built.model):
        for b in range(0, len(scored), batch_size):
            _, top = built.model.retrieve([e.question for e in scored[b:b + batch_size]],
                                          k=depth)                                # (B, K)
            ranked += [[built.model.passages[j].id for j in row] for row in top.tolist()]
    gold = [set(e.gold_passage_ids) for e in scored]
    for k in ks:
        metrics[f"recall@{k}"] = 100.0 * recall_at_k(ranked, gold, k) if scored else None
    metrics["mrr"] = 100.0 * mean_reciprocal_rank(ranked, gold) if scored else None

    predictions = [QAPrediction(e.id, e.question, a.answer, list(e.answers),
                                [c.passage_id for c in a.citations], list(e.gold_passage_ids),
                                [{"id": c.passage_id, "title": c.title, "text": c.text}
                                 for c in a.citations])
                   for e, a in zip(examples, answers)]
    return QAResult(task=task.name, split=split, n=len(examples), metrics=metrics,
                    seconds=seconds, answers_per_second=len(examples) / max(seconds, 1e-9),
                    retrieval_questions=len(scored), no_gold=len(examples) - len(scored),
                    language=language, mrr_cutoff=depth, predictions=predictions)


def markdown_report(results: Sequence[QAResult]) -> str:
    """A markdown table: one row per task, one column per metric (0-100, one decimal).

    A metric a result lacks, or could not compute (no gold passages), shows "–".
    """
    if not results:
        return "(no results)\n"
    keys: list[str] = []
    for r in results:
        keys += [m for m in r.metrics if m not in keys]
    labels = [f"MRR@{results[0].mrr_cutoff}" if m == "mrr"
              else _LABELS.get(m, m.replace("recall@", "R@")) for m in keys]
    head = ["task", "split", "n", *labels, "answers/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.task, r.split, str(r.n),
                 *("–" if r.metrics.get(m) is None else f"{r.metrics[m]:.1f}" for m in keys),
                 f"{r.answers_per_second:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_results(results: Sequence[QAResult], out: str | Path,
                 settings: dict[str, Any]) -> list[Path]:
    """Write metrics.json (settings + results), metrics.md and predictions.jsonl.

    Returns:
        The three paths, in that order.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / METRICS_FILE, out / TABLE_FILE, out / PREDICTIONS_FILE]
    report = {"settings": settings, "results": [r.to_dict() for r in results]}
    paths[0].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                        encoding="utf-8")
    paths[1].write_text(markdown_report(results), encoding="utf-8")
    with open(paths[2], "w", encoding="utf-8") as f:
        for r in results:
            for p in r.predictions:
                f.write(json.dumps({"task": r.task, "split": r.split, **asdict(p)},
                                   ensure_ascii=False) + "\n")
    return paths

"""`metarag ask`: a trained model's answer to one question, with the passages it cites."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from metarag.cli.common import InContextOption, NoRepeatOption, demo_examples

SNIPPET = 200  # characters of a cited passage shown in the terminal


def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", "-c", exists=True, file_okay=False,
        help="A checkpoint folder, or a run folder (its latest checkpoint)."),
    index: Path = typer.Option(
        ..., "--index", "-i", exists=True, file_okay=False,
        help="Folder written by `index build` with the model's encoder."),
    k: int | None = typer.Option(None, "-k", min=1,
                                 help="Passages to retrieve. Default: the model's own k."),
    no_repeat_ngram: int | None = NoRepeatOption,
    in_context: int | None = InContextOption,
    demos: str | None = typer.Option(
        None, "--demos", help="With --in-context K: the task source (folder or synthetic/<domain>) "
        "whose train split gives the K examples. Default: the support set an adapted "
        "checkpoint was adapted on."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object."),
) -> None:
    """Answer QUESTION from the indexed passages and list the passages the answer cites.

    Citations are ranked by their weight p(passage | question, answer).
    """
    if not question.strip():
        raise typer.BadParameter("the question is empty", param_hint="QUESTION")
    from metarag.evaluation.qa import answer_questions
    from metarag.rag.build import load_trained

    built, state = load_trained(str(checkpoint))
    if no_repeat_ngram is not None:
        built.model.config.no_repeat_ngram = no_repeat_ngram
    built.use_index(index, model_name=f"checkpoint {checkpoint}")
    if in_context is None:
        from metarag.meta.adapt import in_context_default

        in_context = in_context_default(state)
    if in_context:
        built.model.use_demos(demo_examples(demos, state), in_context)
    answer = answer_questions(built, [question], k=k)[0]
    citations = [{"id": c.passage_id, "title": c.title, "weight": c.weight,
                  "retrieval_score": c.retrieval_score, "text": c.text}
                 for c in answer.citations]
    if as_json:
        typer.echo(json.dumps({"question": question, "answer": answer.answer,
                               "citations": citations}, indent=2, ensure_ascii=False))
        return
    typer.echo(f"Answer: {answer.answer}\n\nCited passages:")
    for rank, c in enumerate(citations, start=1):
        title = f" [{c['title']}]" if c["title"] else ""
        text = " ".join(c["text"].split())
        text = text if len(text) <= SNIPPET else text[:SNIPPET - 3] + "..."
        typer.echo(f"{rank}. {c['id']}{title}  weight={c['weight']:.3f}\n   {text}")


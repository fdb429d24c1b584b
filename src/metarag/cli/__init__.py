"""The `metarag` command line: one module per command, each a thin layer over the library.

Commands import torch and friends inside their bodies so `metarag --help` is instant.
"""

from __future__ import annotations

import logging

import typer

from metarag import __version__
from metarag.cli import (
    adapt,
    ask,
    benchmark,
    eval_retrieval,
    evaluate,
    export_peft,
    index,
    meta_train,
    retrieve,
    review,
    serve,
    tasks,
    train,
)

app = typer.Typer(
    name="metarag",
    help="Meta-learned retrieval-augmented generation: adapt a RAG model to a new domain "
    "from a handful of examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("tasks")(tasks.tasks)
app.add_typer(index.app, name="index")
app.command("retrieve")(retrieve.retrieve)
app.command("eval-retrieval")(eval_retrieval.eval_retrieval)
app.command("evaluate")(evaluate.evaluate)
app.command("ask")(ask.ask)
app.command("train")(train.train)
app.command("meta-train")(meta_train.meta_train)
app.command("adapt")(adapt.adapt)
app.command("export-peft")(export_peft.export_peft)
app.command("benchmark")(benchmark.benchmark)
app.command("review")(review.review)
app.command("serve")(serve.serve)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"metarag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # bm25s logs every index build, rouge-score (absl) every scoring
        for name in ("bm25s", "absl"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    """Entry point of the console script; known errors become one clear line, exit 2."""
    from metarag.errors import MetaRAGError

    try:
        app()
    except MetaRAGError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(2) from None

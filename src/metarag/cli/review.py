"""`metarag review`: a blind A/B review page for two evaluate runs, and its summary."""

from __future__ import annotations

from pathlib import Path

import typer

RUN_HELP = "A `metarag evaluate --out` folder (or its predictions.jsonl)."


def review(
    a: Path | None = typer.Option(None, "--a", help="Run A. " + RUN_HELP),
    b: Path | None = typer.Option(None, "--b", help="Run B. " + RUN_HELP),
    db: Path = typer.Option(Path("runs/review.db"), "--db", dir_okay=False,
                            help="The SQLite file judgements are committed to (created if "
                            "absent; reopening it resumes)."),
    rater: str | None = typer.Option(
        None, "--rater", help="Take judgements from this rater only; the page then asks no "
        "name. Default: the page asks each rater once and remembers it in the browser."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    name_a: str | None = typer.Option(None, "--name-a", help="Run A's name in the summary. "
                                      "Default: its folder."),
    name_b: str | None = typer.Option(None, "--name-b", help="Run B's name in the summary."),
    summary: Path | None = typer.Option(
        None, "--summary", exists=True, dir_okay=False,
        help="Instead of serving: print the summary of this review database."),
    markdown: bool = typer.Option(False, "--markdown",
                                  help="With --summary: markdown tables, for a report."),
) -> None:
    """Judge two runs' answers blind, side by side, in the browser; or summarise the verdicts.

    Serving: pairs the runs' predictions by task and question id, stores them in
    --db and serves a page at http://HOST:PORT/ that shows each question, the
    retrieved passages and the two answers in a random order per rater, without
    system names. Each verdict (A better, B better, tie, both wrong) is committed
    at once; a rater who comes back continues with the next unjudged question.

    --summary DB: win rate of A over B per pair of systems (ties count half,
    "both wrong" apart) with 95% Wilson intervals over questions, the both-wrong
    rate, and inter-rater agreement (percent and Cohen's / Fleiss' kappa).
    """
    from metarag.review.db import ReviewDB

    if summary is not None:
        if a is not None or b is not None:
            raise typer.BadParameter("give either --summary DB or --a/--b, not both")
        from metarag.review.summary import render, summarize_db

        typer.echo(render(summarize_db(ReviewDB(summary)), markdown=markdown), nl=False)
        return
    if a is None or b is None:
        raise typer.BadParameter("give --a RUN_A and --b RUN_B (or --summary DB)")
    if markdown:
        raise typer.BadParameter("--markdown goes with --summary")

    from metarag.review.app import create_app, serve
    from metarag.review.runs import load_items
    from metarag.serve.security import is_loopback

    run_a, run_b, items = load_items(a, b, name_a, name_b)
    store = ReviewDB(db)
    comparison = store.add_comparison(run_a.name, run_b.name, items,
                                      path_a=str(run_a.path), path_b=str(run_b.path))
    total = len(store.items(comparison.id))
    only = len(run_a.predictions) + len(run_b.predictions) - 2 * len(items)
    typer.echo(f"{len(items)} questions both runs answered"
               + (f" ({only} answered by one run only, left out)" if only else "")
               + f"; {total} in the review of {run_a.name!r} vs {run_b.name!r}.")
    typer.echo(f"Judgements go to {db}. Open http://{host}:{port}/ (Ctrl+C stops).")
    if not is_loopback(host):
        typer.echo("note: the page has no login; anyone who reaches this address can judge.")
    serve(create_app(store, comparison, rater=rater, host=host), host=host, port=port)

"""The blind A/B review page: a FastAPI app over a `ReviewDB` comparison.

Routes:
    GET  /                  the page (static/index.html, review.js, review.css)
    GET  /api/config        the rater fixed by --rater (or null) and the item count
    GET  /api/next?rater=R  the rater's next unjudged item, answers in the rater's order
    POST /api/judgements    {"rater", "key", "choice", "comment"}: stored and committed

The page never learns which system wrote which answer: an item carries its two
answers as "A" and "B" in an order drawn per (item, rater) and stored, and the
server turns the rater's choice back into system terms when it stores it.
Bad input gets a 4xx answer whose ``detail`` names the field.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from metarag.review.db import Comparison, ReviewDB
from metarag.review.runs import Item
from metarag.serve.security import trusted_hosts

RATER_MAX, COMMENT_MAX = 100, 4000
# The page's choice (answer shown as A, as B, ...) -> verdict, given the system shown first.
_VERDICT = {("A", "a"): "a", ("A", "b"): "b", ("B", "a"): "b", ("B", "b"): "a"}
_STATIC = {"review.js": "text/javascript", "review.css": "text/css"}


class JudgementIn(BaseModel):
    """A judgement as the page posts it."""

    model_config = ConfigDict(extra="forbid")

    rater: str = Field(min_length=1, max_length=RATER_MAX)
    key: str = Field(min_length=1)
    choice: Literal["A", "B", "tie", "both_wrong"]
    comment: str = Field(default="", max_length=COMMENT_MAX)

    @field_validator("rater")
    @classmethod
    def _named(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("give a rater name")
        return value


def _payload(item: Item, first: str, position: int, done: int, total: int) -> dict[str, Any]:
    """What the page shows of an item: no system names, answers in the rater's order."""
    answers = [(item.answer_a, item.passages_a), (item.answer_b, item.passages_b)]
    if first == "b":
        answers.reverse()
    shared = item.passages_a == item.passages_b
    return {"done": False, "key": item.key, "position": position, "question": item.question,
            "references": item.references,
            "passages": item.passages_a if shared else None,
            "answers": [{"label": label, "text": text, "passages": None if shared else ps}
                        for label, (text, ps) in zip("AB", answers)],
            "judged": done, "total": total}


def create_app(db: ReviewDB, comparison: Comparison, *, rater: str | None = None,
               host: str = "127.0.0.1") -> Any:
    """The review app for one comparison.

    Args:
        db: The review store (judgements are committed there as they arrive).
        comparison: The comparison under review (`ReviewDB.add_comparison`).
        rater: When given, the only rater this server accepts, and the page asks no name.
        host: The address it is served on: on loopback only requests naming a loopback
            host are accepted (`metarag.serve.security.trusted_hosts`).
    """
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    app = FastAPI(title="metarag review", docs_url=None, redoc_url=None, openapi_url=None)
    hosts = trusted_hosts(host)
    if hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    static = files("metarag.review") / "static"
    positions = {item.key: i for i, item in enumerate(db.items(comparison.id), start=1)}

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Any, err: RequestValidationError) -> JSONResponse:
        # One readable line per problem, naming the field (FastAPI's default is a raw list).
        problems = []
        for e in err.errors():
            if e["type"] == "json_invalid":  # its loc is a character offset, not a field
                problems.append(f"body: not valid JSON ({e['ctx'].get('error', e['msg'])})")
                continue
            where = ".".join(str(p) for p in e["loc"] if p not in ("body", "query"))
            problems.append(f"{where or 'body'}: {e['msg']}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    def _rater(name: str) -> str:
        name = name.strip()
        if not name:
            raise HTTPException(422, "rater: give a rater name")
        if len(name) > RATER_MAX:
            raise HTTPException(422, f"rater: at most {RATER_MAX} characters")
        if rater is not None and name != rater:
            raise HTTPException(403, f"rater: this server takes judgements from {rater!r} "
                                "only (started with --rater)")
        return name

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    def asset(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, f"no static file {name!r}")
        return Response((static / name).read_text(encoding="utf-8"), media_type=_STATIC[name])

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return {"rater": rater, "total": len(positions)}

    @app.get("/api/next")
    def next_item(rater_name: str = Query(alias="rater")) -> dict[str, Any]:
        name = _rater(rater_name)
        done, total = db.progress(comparison.id, name)
        item = db.next_unjudged(comparison.id, name)
        if item is None:
            return {"done": True, "judged": done, "total": total}
        first = db.shown_first(comparison, item.key, name)
        return _payload(item, first, positions.get(item.key, 0), done, total)

    @app.post("/api/judgements")
    def judge(body: JudgementIn) -> dict[str, Any]:
        name = _rater(body.rater)
        try:
            first = db.shown_first(comparison, body.key, name)
        except KeyError:
            raise HTTPException(404, f"key: no item {body.key!r} in this review") from None
        verdict = _VERDICT.get((body.choice, first), body.choice)
        db.judge(comparison.id, body.key, name, verdict, first, body.comment.strip())
        done, total = db.progress(comparison.id, name)
        return {"saved": True, "key": body.key, "judged": done, "total": total}

    return app


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")

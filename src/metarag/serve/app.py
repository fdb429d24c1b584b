"""The HTTP API over a `Service` (FastAPI; OpenAPI docs at ``/docs``).

    POST   /v1/answer              {domain, question, k?, in_context?} -> answer + citations
    GET    /v1/domains             the registered domains
    PUT    /v1/domains/{name}      register or replace one (admin: needs the API key)
    DELETE /v1/domains/{name}      unregister one (admin)
    GET    /healthz                liveness, queue and cache figures (no key)

Every error is JSON ``{"detail": "..."}``: 401 (key), 403 (admin without a key
configured), 404 (unknown domain, naming the known ones), 413 (body too large),
422 (a bad field, named), 503 (queue full), 504 (timeout), 500 (a request that
crashed; the server keeps serving).

Annotations are evaluated (no ``from __future__ import annotations``): FastAPI reads
the request model of ``/v1/answer``, a class made per app, from them.
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from metarag.serve.batcher import Done, QueueFull, Stopped
from metarag.serve.registry import DomainError, UnknownDomain
from metarag.serve.security import LOOPBACK_NAMES, BodyLimit, key_matches
from metarag.serve.service import Service

log = logging.getLogger(__name__)


class Citation(BaseModel):
    id: str
    title: str
    score: float = Field(description="Retrieval score of the passage (cosine, or BM25).")
    weight: float = Field(description="p(passage | question, answer): the passage's share.")
    text: str


class Timings(BaseModel):
    queue_ms: float = Field(description="Waiting for the worker and for batch company.")
    generate_ms: float = Field(description="The batch's model call: retrieval, generation, "
                               "citation (shared by the batch).")
    total_ms: float = Field(description="Request received to answer ready.")
    batch_size: int = Field(description="Questions answered in the same model call.")


class AnswerResponse(BaseModel):
    domain: str
    answer: str
    citations: list[Citation]
    timings: Timings


class DomainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapted: str = Field(min_length=1, max_length=4096,
                         description="Server-side folder written by `metarag adapt --out`.")
    index: str | None = Field(None, min_length=1, max_length=4096,
                              description="Passage index folder; default ADAPTED/index.")


def _answer_request(max_question_chars: int, max_k: int, max_in_context: int) -> type:
    """The request model, with the server's limits (they show in the OpenAPI schema)."""

    class AnswerRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        domain: str = Field(min_length=1, max_length=64)
        question: str = Field(min_length=1, max_length=max_question_chars)
        k: int | None = Field(None, ge=1, le=max_k,
                              description="Passages to retrieve; default: the domain's own.")
        in_context: int | None = Field(
            None, ge=0, le=max_in_context, description="Support examples of the domain in "
            "the prompt; default: the domain's own (its support set, up to the server's "
            "limit, when it was adapted with it in its prompts; else none).")

        @field_validator("question")
        @classmethod
        def _not_blank(cls, value: str) -> str:
            if not value.strip():
                raise ValueError("the question is blank")
            return value

    return AnswerRequest


def create_app(service: Service, *, api_key: str | None = None,
               allowed_hosts: Sequence[str] | None = LOOPBACK_NAMES) -> FastAPI:
    """The FastAPI app; it starts and stops the service's worker with its lifespan.

    Args:
        service: The domains, model and worker.
        api_key: Required as ``Authorization: Bearer <key>`` on every ``/v1`` endpoint
            when given; without it the admin endpoints answer 403.
        allowed_hosts: Accept only requests whose Host header names one of these
            (400 otherwise), against DNS rebinding: for a server bound to loopback.
            None accepts any Host (a server reached by other names).
    """
    settings = service.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="metarag", lifespan=lifespan,
                  description="Answers with cited passages for any adapted domain, from one "
                  "base model.")
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _errors(app)

    def caller(authorization: str | None = Header(None)) -> None:
        if api_key is not None and not key_matches(authorization, api_key):
            raise HTTPException(401, "missing or wrong API key: send Authorization: Bearer "
                                "<key>", headers={"WWW-Authenticate": "Bearer"})

    def admin(authorization: str | None = Header(None)) -> None:
        if api_key is None:
            raise HTTPException(403, "managing domains needs an API key: restart the server "
                                "with --api-key-env VAR or --api-key-file PATH")
        caller(authorization)

    AnswerRequest = _answer_request(settings.max_question_chars, settings.max_k,
                                    settings.max_in_context)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        stats = service.stats()
        return JSONResponse({"status": "ok" if stats["worker_alive"] else "down", **stats},
                            status_code=200 if stats["worker_alive"] else 503)

    @app.get("/v1/domains", dependencies=[Depends(caller)])
    def domains() -> dict[str, Any]:
        return {"domains": service.domains()}

    @app.put("/v1/domains/{name}", dependencies=[Depends(admin)], status_code=201)
    def put_domain(name: str, body: DomainRequest) -> JSONResponse:
        try:  # def, not async: reading the files runs in the thread pool
            spec, new = service.add_domain(name, body.adapted, body.index)
        except DomainError as err:
            raise HTTPException(422, str(err)) from None
        return JSONResponse(service.describe(spec), status_code=201 if new else 200)

    @app.delete("/v1/domains/{name}", dependencies=[Depends(admin)])
    def delete_domain(name: str) -> dict[str, Any]:
        return {"removed": service.describe(service.remove_domain(name))}

    @app.post("/v1/answer", dependencies=[Depends(caller)], response_model=AnswerResponse)
    async def answer(body: AnswerRequest) -> AnswerResponse:  # type: ignore[valid-type]
        received = time.perf_counter()
        spec = service.registry.get(body.domain)
        in_context = (service.default_in_context(spec) if body.in_context is None
                      else body.in_context)
        if in_context > len(spec.support_ids):
            raise HTTPException(422, f"in_context: domain {spec.name!r} has "
                                f"{len(spec.support_ids)} support examples")
        try:
            future = service.submit(body.domain, body.question, k=body.k, in_context=in_context)
        except QueueFull as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from None
        try:
            done: Done = await asyncio.wait_for(asyncio.wrap_future(future),
                                                settings.request_timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            raise HTTPException(504, f"no answer within {settings.request_timeout_s:g} s"
                                ) from None
        except (UnknownDomain, DomainError, Stopped):
            raise  # removed meanwhile, or a bad request: their own status
        except Exception as err:  # this request crashed; the worker serves the next one
            log.error("answering for domain %r failed", body.domain, exc_info=err)
            return JSONResponse({"detail": f"answering for domain {body.domain!r} failed: "
                                 f"{type(err).__name__}: {err}"}, status_code=500)
        result = done.value
        return AnswerResponse(
            domain=body.domain, answer=result.answer,
            citations=[Citation(id=c.passage_id, title=c.title, score=c.retrieval_score,
                                weight=c.weight, text=c.text) for c in result.citations],
            timings=Timings(queue_ms=1000 * done.queue_s, generate_ms=1000 * done.run_s,
                            total_ms=1000 * (time.perf_counter() - received),
                            batch_size=done.batch_size))

    return app


def _errors(app: FastAPI) -> None:
    """One JSON shape for every error: {"detail": "..."} (+ "errors" for 422)."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "msg": e["msg"]}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field'] or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(UnknownDomain)
    async def unknown(_: Request, exc: UnknownDomain) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "known": exc.known}, status_code=404)

    @app.exception_handler(DomainError)
    async def bad_domain(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Stopped)
    async def stopped(_: Request, exc: Stopped) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"},
                            status_code=500)

"""`metarag serve`: an HTTP service answering for many adapted domains from one base model."""

from __future__ import annotations

import re
from pathlib import Path

import typer

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """'2G', '512M', '1.5GiB', '1000000' -> bytes (K/M/G/T are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r}: expected a size such as 2G, 512M or 1000000",
                                 param_hint="--cache-bytes")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "_kmgt".index(unit.lower() or "_"))


def serve(
    base: Path = typer.Option(..., "--base", "-b", exists=True, file_okay=False,
                              help="The base checkpoint or run folder (e.g. the meta-trained "
                              "run the domains were adapted from); loaded once."),
    domain: list[str] = typer.Option(
        [], "--domain", "-d",
        help="NAME=ADAPTED_DIR[,index=INDEX_DIR]; repeat for each domain. ADAPTED_DIR is the "
        "--out folder of `metarag adapt`: its weights are swapped into the base per request, "
        "its passages come from ADAPTED_DIR/index unless index= names another index "
        "(built with the base's encoder). Loaded on first use."),
    host: str = typer.Option("127.0.0.1", help="Address to bind. Anything but loopback needs "
                             "an API key."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0: any free one)."),
    api_key_env: str | None = typer.Option(None, "--api-key-env", metavar="VAR",
                                           help="Read the API key from this environment "
                                           "variable."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file", metavar="PATH",
                                             help="Read the API key from this file."),
    require_key: bool = typer.Option(False, "--require-key",
                                     help="Refuse to start without an API key, on loopback "
                                     "too."),
    cache_bytes: str = typer.Option("2G", "--cache-bytes",
                                    help="Memory for loaded domains (weights, passage "
                                    "embeddings and text), least recently used out first."),
    batch_window_ms: float = typer.Option(10.0, min=0, help="How long a request waits for "
                                          "others of its domain to share a model call."),
    max_batch: int = typer.Option(8, min=1, help="Questions per model call at most."),
    max_queue: int = typer.Option(256, min=1, help="Waiting requests at most (more: 503)."),
    max_body_bytes: int = typer.Option(65536, min=256, help="Larger request bodies: 413."),
    max_question_chars: int = typer.Option(2000, min=1, help="Longer questions: 422."),
    max_k: int = typer.Option(20, min=1, help="Largest k a request may ask for."),
    max_in_context: int = typer.Option(
        16, min=0, help="Largest in_context a request may ask for; also the most support "
        "examples a domain adapted with them in its prompts gets by default."),
    request_timeout: float = typer.Option(300.0, "--request-timeout", min=1,
                                          help="Seconds before a request gets 504."),
) -> None:
    """Serve answers with cited passages for every --domain, from one base model.

    POST /v1/answer {"domain", "question", "k"?, "in_context"?}; GET /v1/domains;
    PUT/DELETE /v1/domains/NAME (with the API key); GET /healthz; docs at /docs.
    With a key, every /v1 call needs the header "Authorization: Bearer KEY".
    See docs/SERVING.md.
    """
    from metarag.serve.registry import DomainError, parse_domain
    from metarag.serve.security import SecurityError, check_bind, read_api_key, trusted_hosts

    # Refuse an unsafe setting before anything slow is loaded.
    try:
        api_key = read_api_key(api_key_env, api_key_file)
        check_bind(host, api_key, require_key=require_key)
        domains = [parse_domain(d) for d in domain]
    except (SecurityError, DomainError) as err:
        raise typer.BadParameter(str(err)) from None
    names = [d[0] for d in domains]
    if len(set(names)) != len(names):
        raise typer.BadParameter(f"a domain name is given twice: {names}", param_hint="--domain")

    import uvicorn

    from metarag.checkpoint import Checkpoint
    from metarag.rag.build import checkpoint_config, load_trained
    from metarag.serve.app import create_app
    from metarag.serve.service import ServeSettings, Service

    settings = ServeSettings(
        cache_bytes=parse_bytes(cache_bytes), batch_window_ms=batch_window_ms,
        max_batch=max_batch, max_queue=max_queue, max_body_bytes=max_body_bytes,
        max_question_chars=max_question_chars, max_k=max_k, max_in_context=max_in_context,
        request_timeout_s=request_timeout)
    built, state = load_trained(str(base))
    config = checkpoint_config(Checkpoint(base, {}, {}, state))
    service = Service(built, settings, base_config=config)
    for name, adapted, index in domains:
        try:
            service.add_domain(name, adapted, index)
        except DomainError as err:
            raise typer.BadParameter(str(err), param_hint="--domain") from None
    app = create_app(service, api_key=api_key, allowed_hosts=trusted_hosts(host))
    typer.echo(f"serving {len(domains)} domain(s) {', '.join(names)} on http://{host}:{port} "
               f"({'API key required' if api_key else 'no API key: loopback only'}); "
               "docs at /docs")
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False,
                timeout_graceful_shutdown=10)

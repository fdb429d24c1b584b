"""`metarag serve` end to end: a real uvicorn server on a loopback port, real HTTP (httpx),
tiny real models, adapted domains written by `metarag adapt`."""

import json
import random
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import httpx
import pytest
import torch
import uvicorn
from typer.testing import CliRunner

from helpers import tiny_model
from metarag.checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint
from metarag.cli import app as cli
from metarag.config import from_dict
from metarag.meta.params import select_params
from metarag.rag.build import (
    BASE_KEY,
    MODEL_CONFIG_KEY,
    ModelConfig,
    base_record,
    build_model,
    checkpoint_config,
    load_trained,
    model_weights,
)
from metarag.rag.model import RAGConfig
from metarag.serve.app import create_app
from metarag.serve.registry import DomainError
from metarag.serve.service import ServeSettings, Service

runner = CliRunner()
KEY = "test-key-0123456789abcdef"

BANK = [
    {"id": "b1", "title": "Velazine", "text": "The standard adult dose of Velazine is 250 mg."},
    {"id": "b2", "title": "Dunmore lease", "text": "Clause 14.3 ends the Dunmore lease early."},
    {"id": "b3", "title": "Norvell Bank", "text": "Ada Brook chairs the audit committee."},
    {"id": "b4", "title": "Fees", "text": "The Norvell account fee is 4 dollars a month."},
]
FARM = [
    {"id": "f1", "title": "Barley", "text": "The farm planted 40 hectares of barley in spring."},
    {"id": "f2", "title": "Amberlight", "text": "Amberlight wheat yields 6 tonnes per hectare."},
    {"id": "f3", "title": "Storage", "text": "Grain is stored dry in sealed silos."},
]
QUESTIONS = ["What is the adult dose of Velazine?", "Which clause ends the Dunmore lease?",
             "Who chairs the audit committee?", "What is the account fee?",
             "How many hectares of barley were planted?", "How is grain stored?"]


def _task(folder, passages, questions):
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages))
    rows = [{"id": f"{folder.name}-q{i}", "question": q, "answer": "x",
             "gold_passage_ids": [passages[i % len(passages)]["id"]],
             "split": "train" if i < 3 else "test"} for i, q in enumerate(questions)]
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _adapt(base, task, out, *extra):
    result = runner.invoke(cli, ["adapt", "--checkpoint", str(base), "--task-file", str(task),
                                 "--shots", "2", "--steps", "1", "--out", str(out),
                                 "--cache-dir", "none", *extra])
    assert result.exit_code == 0, result.output
    return out


def _perturbed(adapted, out, seed):
    """A copy of an adapted checkpoint with other (large) LoRA weights and no index."""
    ckpt = load_checkpoint(adapted)
    gen = torch.Generator().manual_seed(seed)
    weights = {k: (torch.randn(v.shape, generator=gen) * 0.5 if "lora_" in k else v)
               for k, v in ckpt.model.items()}
    state = {k: v for k, v in ckpt.state.items() if k not in ("format", "step", "rng")}
    save_checkpoint(out, 1, model=weights, state=state)
    return out


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tiny_encoder_dir):
    """A tiny base (LoRA checkpoint over a tiny Gemma) and three adapted domains."""
    root = tmp_path_factory.mktemp("serve")
    bank = _task(root / "bank", BANK, QUESTIONS[:4])
    farm = _task(root / "farm", FARM, QUESTIONS[4:] + QUESTIONS[:1])
    config = from_dict(ModelConfig, {"encoder": str(tiny_encoder_dir),
                                     **tiny_model("causal", max_source_length=64,
                                                  max_target_length=12)})
    config.rag = RAGConfig(k=2, max_new_tokens=4)
    built = build_model(config)
    base = save_checkpoint(root / "base", 0, model=model_weights(
        built.model, select_params(built.model, ["lora"])), state={
            MODEL_CONFIG_KEY: asdict(config), BASE_KEY: base_record(built.model, seed=0)})
    adapted_bank = _adapt(base, bank, root / "adapted-bank")
    return {"root": root, "base": base, "bank": adapted_bank,
            "bank_b": _perturbed(adapted_bank, root / "adapted-bank-b", seed=1),
            "farm": _adapt(base, farm, root / "adapted-farm"), "config": config,
            "encoder": tiny_encoder_dir}


def _service(dirs, **settings):
    built, state = load_trained(str(dirs["base"]))
    service = Service(built, ServeSettings(**{"batch_window_ms": 50, **settings}),
                      base_config=checkpoint_config(Checkpoint(dirs["base"], {}, {}, state)))
    service.add_domain("bank", dirs["bank"])
    service.add_domain("bank_b", dirs["bank_b"], dirs["bank"] / "index")
    service.add_domain("farm", dirs["farm"])
    return service


class LiveServer:
    """uvicorn on a free loopback port, in a thread; the socket is bound before it starts."""

    def __init__(self, app):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def open_server(dirs):
    """No API key (loopback): answering is open, managing domains is off."""
    service = _service(dirs)
    live = LiveServer(create_app(service))
    yield live, service
    live.close()


@pytest.fixture(scope="module")
def keyed_server(dirs):
    """With an API key, and a cache that holds one domain at a time."""
    service = _service(dirs, cache_bytes=1, max_question_chars=200, max_k=3,
                       max_body_bytes=4096)
    live = LiveServer(create_app(service, api_key=KEY))
    yield live, service
    live.close()


def _ask(url, domain, question, headers=None, **extra):
    reply = httpx.post(f"{url}/v1/answer", json={"domain": domain, "question": question,
                                                 **extra}, headers=headers, timeout=60)
    return reply


def _answer(url, domain, question, **extra):
    reply = _ask(url, domain, question, **extra)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    return body["answer"], [c["id"] for c in body["citations"]], body


def test_answer_gives_cited_passages_and_timings(open_server):
    live, _ = open_server
    answer, ids, body = _answer(live.url, "bank", "Who chairs the audit committee?")
    assert isinstance(answer, str) and body["domain"] == "bank"
    assert len(ids) == 2 and set(ids) <= {p["id"] for p in BANK}
    weights = [c["weight"] for c in body["citations"]]
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1, abs=1e-4)
    texts = {p["id"]: p["text"] for p in BANK}
    assert all(c["text"] == texts[c["id"]] and c["title"] for c in body["citations"])
    assert set(body["timings"]) == {"queue_ms", "generate_ms", "total_ms", "batch_size"}
    assert body["timings"]["total_ms"] >= body["timings"]["generate_ms"] >= 0
    _, ids, _ = _answer(live.url, "farm", "How is grain stored?", k=3)
    assert len(ids) == 3 and set(ids) <= {p["id"] for p in FARM}

    assert httpx.get(f"{live.url}/healthz").json()["status"] == "ok"
    listed = httpx.get(f"{live.url}/v1/domains").json()["domains"]
    assert [d["name"] for d in listed] == ["bank", "bank_b", "farm"]
    assert listed[1]["index"] == str(open_server[1].registry.get("bank").index)
    assert httpx.get(f"{live.url}/docs").status_code == 200
    assert "/v1/answer" in httpx.get(f"{live.url}/openapi.json").json()["paths"]


def _alone(dirs):
    """Each domain's answers from its own model, the way `metarag ask` loads it."""
    from metarag.evaluation.qa import answer_questions

    answers = {}
    for name, index in (("bank", None), ("bank_b", dirs["bank"] / "index"), ("farm", None)):
        built, _ = load_trained(str(dirs[name]))
        built.use_index(index or dirs[name] / "index")
        for q, a in zip(QUESTIONS, answer_questions(built, QUESTIONS, batch_size=1)):
            answers[name, q] = (a.answer, [c.passage_id for c in a.citations])
    return answers


def test_concurrent_domains_never_see_each_others_weights(open_server, dirs):
    """bank and bank_b share a corpus and differ only in adapted weights; farm differs in
    both. Interleaved concurrent requests (batched per domain) answer as each domain's own
    model does alone."""
    live, service = open_server
    domains = ("bank", "bank_b", "farm")
    alone = _alone(dirs)
    # The test can fail: bank_b's weights change what the model says on bank's corpus.
    assert any(alone["bank", q][0] != alone["bank_b", q][0] for q in QUESTIONS)
    for d in domains:  # one at a time
        assert [_answer(live.url, d, q)[:2] for q in QUESTIONS] == [alone[d, q]
                                                                  for q in QUESTIONS]

    jobs = [(d, q) for d in domains for q in QUESTIONS] * 2
    random.Random(0).shuffle(jobs)
    before = service.batcher.batches
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda job: _answer(live.url, *job), jobs))
    for job, (answer, ids, body) in zip(jobs, replies):
        assert (answer, ids) == alone[job], (job, body)
    batch_sizes = [body["timings"]["batch_size"] for _, _, body in replies]
    assert max(batch_sizes) > 1  # requests of one domain did share model calls
    assert service.batcher.batches - before < len(jobs)


def test_bad_requests_get_4xx_with_a_message(open_server):
    live, _ = open_server
    reply = _ask(live.url, "nowhere", "Who?")
    assert reply.status_code == 404
    assert "nowhere" in reply.json()["detail"] and "bank, bank_b, farm" in reply.json()["detail"]
    cases = [({"question": "x" * 2001}, "question"), ({"question": "   "}, "question"),
             ({"k": 0}, "k"), ({"k": 21}, "k"), ({"in_context": 17}, "in_context"),
             ({"in_context": 3}, "in_context"), ({"temperature": 1}, "temperature")]
    for extra, field in cases:
        reply = _ask(live.url, "bank", extra.pop("question", "Who?"), **extra)
        assert reply.status_code == 422, (extra, reply.text)
        assert field in reply.json()["detail"], reply.json()
    reply = httpx.post(f"{live.url}/v1/answer", json={"question": "Who?"})
    assert reply.status_code == 422 and "domain" in reply.json()["detail"]
    reply = httpx.post(f"{live.url}/v1/answer", content=b"{not json",
                       headers={"content-type": "application/json"})
    assert reply.status_code == 422
    reply = httpx.post(f"{live.url}/v1/answer", content=b"x" * 70_000)
    assert reply.status_code == 413 and "bytes" in reply.json()["detail"]
    # A web page reaching the loopback server by DNS rebinding sends its own Host.
    reply = httpx.get(f"{live.url}/v1/domains", headers={"host": "evil.example"})
    assert reply.status_code == 400


def test_in_context_uses_the_domains_support_set(open_server):
    live, _ = open_server
    answer, ids, _ = _answer(live.url, "bank", "What is the account fee?", in_context=2)
    assert isinstance(answer, str) and len(ids) == 2


def test_a_domain_adapted_in_context_gets_its_support_set_by_default(dirs):
    adapted = _adapt(dirs["base"], dirs["root"] / "bank", dirs["root"] / "adapted-icl",
                     "--in-context")
    built, state = load_trained(str(dirs["base"]))
    service = Service(built, ServeSettings(max_in_context=1),
                      base_config=checkpoint_config(Checkpoint(dirs["base"], {}, {}, state)))
    spec, _ = service.add_domain("icl", adapted)
    plain, _ = service.add_domain("plain", dirs["bank"])
    assert spec.in_context == 2 and plain.in_context == 0
    # The server's cap applies to the default, and the listing says what requests get.
    assert service.default_in_context(spec) == 1 and service.describe(spec)["in_context"] == 1
    assert [d["in_context"] for d in service.domains()] == [1, 0]


def test_support_examples_are_read_again_or_refused_by_name(dirs):
    from metarag.errors import DataError
    from metarag.meta.adapt import support_examples

    state = load_checkpoint(dirs["bank"]).state
    ids = state["support_ids"]
    assert [e.id for e in support_examples(state["task_source"], ids, 0)] == ids
    with pytest.raises(DataError, match="1 of the 3 .*'gone'.*re-adapt"):
        support_examples(state["task_source"], [*ids, "gone"], 0)


def test_managing_domains_needs_a_key(open_server, dirs):
    live, _ = open_server
    reply = httpx.put(f"{live.url}/v1/domains/farm2", json={"adapted": str(dirs["farm"])})
    assert reply.status_code == 403 and "--api-key" in reply.json()["detail"]
    assert httpx.delete(f"{live.url}/v1/domains/bank").status_code == 403


def test_api_key_is_checked(keyed_server):
    live, _ = keyed_server
    for headers in (None, {"authorization": "Bearer wrong-key-0123456789"},
                    {"authorization": KEY}):
        reply = _ask(live.url, "bank", "Who?", headers=headers)
        assert reply.status_code == 401 and "API key" in reply.json()["detail"]
        assert httpx.get(f"{live.url}/v1/domains", headers=headers).status_code == 401
    good = {"authorization": f"Bearer {KEY}"}
    assert _ask(live.url, "bank", "Who?", headers=good).status_code == 200
    assert httpx.get(f"{live.url}/healthz").status_code == 200  # liveness stays open
    reply = _ask(live.url, "bank", "x" * 201, headers=good)
    assert reply.status_code == 422 and "200 characters" in reply.json()["detail"]
    reply = _ask(live.url, "bank", "Who?", headers=good, k=4)
    assert reply.status_code == 422 and "k" in reply.json()["detail"]
    reply = _ask(live.url, "bank", "Who?" * 1100, headers=good)
    assert reply.status_code == 413


def test_add_replace_and_remove_a_domain_while_serving(keyed_server, dirs):
    live, _ = keyed_server
    auth = {"authorization": f"Bearer {KEY}"}
    url = f"{live.url}/v1/domains/farm2"
    reply = httpx.put(url, json={"adapted": str(dirs["farm"])}, headers=auth)
    assert reply.status_code == 201, reply.text
    assert reply.json()["index"] == str(dirs["farm"] / "index")
    _, ids, _ = _answer(live.url, "farm2", "How is grain stored?", headers=auth)
    assert set(ids) <= {p["id"] for p in FARM}
    # Replaced by another domain's files: the next answer comes from those.
    reply = httpx.put(url, json={"adapted": str(dirs["bank"])}, headers=auth)
    assert reply.status_code == 200, reply.text
    _, ids, _ = _answer(live.url, "farm2", "How is grain stored?", headers=auth)
    assert set(ids) <= {p["id"] for p in BANK}
    assert httpx.delete(url, headers=auth).status_code == 200
    reply = _ask(live.url, "farm2", "How is grain stored?", headers=auth)
    assert reply.status_code == 404
    assert httpx.delete(url, headers=auth).status_code == 404

    for body, words in [({"adapted": str(dirs["root"] / "missing")}, "not a folder"),
                        ({"adapted": str(dirs["bank"]), "index": str(dirs["root"])},
                         "not a passage index"),
                        ({"adapted": str(dirs["root"] / "bank")}, "not a checkpoint"),
                        ({"adapted": str(dirs["bank"]), "extra": 1}, "extra")]:
        reply = httpx.put(url, json=body, headers=auth)
        assert reply.status_code == 422 and words in reply.json()["detail"], reply.text
    reply = httpx.put(f"{live.url}/v1/domains/bad name", json={"adapted": str(dirs["bank"])},
                      headers=auth)
    assert reply.status_code == 422 and "domain name" in reply.json()["detail"]


def test_the_cache_keeps_within_its_bytes_and_reloads(keyed_server):
    live, service = keyed_server
    auth = {"authorization": f"Bearer {KEY}"}
    first = _answer(live.url, "bank", "Who chairs the audit committee?", headers=auth)[:2]
    _answer(live.url, "farm", "How is grain stored?", headers=auth)
    loaded = {d["name"]: d["loaded"] for d in
              httpx.get(f"{live.url}/v1/domains", headers=auth).json()["domains"]}
    assert loaded == {"bank": False, "bank_b": False, "farm": True}  # 1 byte: newest only
    assert service.engine.cache.evictions >= 1
    again = _answer(live.url, "bank", "Who chairs the audit committee?", headers=auth)[:2]
    assert again == first


def test_a_crashing_request_is_500_and_the_server_keeps_serving(open_server, dirs):
    live, service = open_server
    good = _answer(live.url, "bank", "Which clause ends the Dunmore lease?")[:2]
    broken = shutil.copytree(dirs["bank"], dirs["root"] / "broken")
    no_index = shutil.copytree(dirs["bank"], dirs["root"] / "no-index")
    service.add_domain("broken", broken)
    service.add_domain("no_index", no_index)
    # Damaged after registration, before first use.
    (latest_checkpoint(broken) / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    shutil.rmtree(no_index / "index")
    for name, words in (("broken", "safetensors"), ("no_index", "index")):
        reply = _ask(live.url, name, "Which clause ends the Dunmore lease?")
        assert reply.status_code == 500, reply.text
        assert name in reply.json()["detail"] and words in reply.json()["detail"].lower()
        assert _answer(live.url, "bank", "Which clause ends the Dunmore lease?")[:2] == good
    assert httpx.get(f"{live.url}/healthz").json()["worker_alive"] is True
    service.remove_domain("broken")
    service.remove_domain("no_index")


def test_swapping_restores_the_base_exactly(dirs):
    service = _service(dirs)  # not started: the engine is driven from this thread
    engine, model = service.engine, service.engine.model
    base = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = load_checkpoint(dirs["bank_b"]).model
    engine.activate(service.registry.get("bank_b"))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in adapted.items())
    assert any(not torch.equal(state[k], base[k]) for k in adapted)
    engine.activate(service.registry.get("farm"))
    engine.reset()
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())
    assert model.config is engine.base_rag


def test_registration_refuses_what_cannot_run_on_the_base(dirs, tmp_path):
    service = _service(dirs)
    # Another tiny base (seed 1): its LoRA checkpoint fits by shape but not by base.
    other = build_model(dirs["config"], seed=1)
    save_checkpoint(tmp_path / "other", 0, model=model_weights(
        other.model, select_params(other.model, ["lora"])), state={
            MODEL_CONFIG_KEY: asdict(dirs["config"]), BASE_KEY: base_record(other.model, seed=1)})
    with pytest.raises(DomainError, match="trained on base"):
        service.add_domain("other", tmp_path / "other", dirs["bank"] / "index")
    config = asdict(dirs["config"])
    config["lora"]["r"] = 4
    save_checkpoint(tmp_path / "wider", 0, model={}, state={MODEL_CONFIG_KEY: config})
    with pytest.raises(DomainError, match="differs from the base's in lora"):
        service.add_domain("wider", tmp_path / "wider", dirs["bank"] / "index")


def test_cli_refuses_unsafe_settings_before_loading_anything(dirs, monkeypatch):
    result = runner.invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "NAME=ADAPTED_DIR" in result.output
    assert "serve" in runner.invoke(cli, ["--help"]).output
    base = ["serve", "--base", str(dirs["base"]), "--domain", f"bank={dirs['bank']}"]
    for extra, words in [(["--host", "0.0.0.0"], "API key is required"),
                         (["--require-key"], "no API key"),
                         (["--api-key-env", "METARAG_TEST_NO_SUCH_VAR"], "not set"),
                         (["--domain", "bank"], "NAME=ADAPTED_DIR"),
                         (["--domain", f"x={dirs['bank']},idx=y"], "index=INDEX_DIR")]:
        result = runner.invoke(cli, [*base, *extra])
        assert result.exit_code != 0 and words in result.output, result.output
    monkeypatch.setenv("METARAG_TEST_KEY", "short")
    result = runner.invoke(cli, [*base, "--api-key-env", "METARAG_TEST_KEY"])
    assert result.exit_code != 0 and "at least 16" in result.output


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_serve_command_runs_a_server(dirs, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "metarag", "serve", "--base", str(dirs["base"]),
         "--domain", f"bank={dirs['bank']}",
         "--domain", f"bank_b={dirs['bank_b']},index={dirs['bank'] / 'index'}",
         "--port", str(port), "--api-key-file", str(key_file), "--batch-window-ms", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    url, auth = f"http://127.0.0.1:{port}", {"authorization": f"Bearer {KEY}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert _ask(url, "bank", "Who?").status_code == 401
        _, ids, _ = _answer(url, "bank_b", "Who chairs the audit committee?", headers=auth)
        assert set(ids) <= {p["id"] for p in BANK}
        names = [d["name"] for d in httpx.get(f"{url}/v1/domains", headers=auth).json()["domains"]]
        assert names == ["bank", "bank_b"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "serving 2 domain(s) bank, bank_b" in out and "API key required" in out

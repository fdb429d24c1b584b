"""Helpers shared by tests (importable: pytest puts tests/ on sys.path, see pyproject)."""

from __future__ import annotations

# The two tiny generators every RAG, meta-learning and CLI test runs on: BERT2BERT
# (encoder-decoder, the small option) and Gemma 3 (decoder-only, the default's
# architecture, with its default adapted set: LoRA).
TINY_KINDS = ("bert2bert", "causal")
ADAPTED = {"bert2bert": ["decoder"], "causal": ["lora"]}


def tiny_model(kind: str, **overrides: object) -> dict:
    """A ``model:`` config section for a tiny generator of ``kind`` (see TINY_KINDS)."""
    section = {"generator": "tiny", "generator_kind": kind,
               "lora": {"r": 2} if kind == "causal" else None}
    section.update(overrides)
    return section


# --- the review page (metarag.review) ------------------------------------------------

REVIEW_QUESTIONS = [
    ("bank", "q1", "Who chairs the audit committee?"),
    ("bank", "q2", "When was Norvell Bank founded?"),
    ("pharmacy", "q1", "What is the adult dose of Velazine?"),
    ("pharmacy", "q2", "Which organ clears Velazine?"),
    ("lease", "q7", "Which clause ends the Dunmore lease early?"),
]


def review_record(task: str, qid: str, question: str, system: str, *,
                  shared_passages: bool = True) -> dict:
    """One predictions.jsonl record as `metarag evaluate` writes it, answered by ``system``."""
    pid = f"{task}-p1" if shared_passages else f"{task}-{system}-p1"
    return {"task": task, "split": "test", "id": qid, "question": question,
            "prediction": f"{system} answers {task}/{qid}", "references": [f"gold {qid}"],
            "cited_passage_ids": [pid], "gold_passage_ids": [pid],
            "passages": [{"id": pid, "title": task.title(), "text": f"Passage on {question}"}]}


def write_run(folder, records: list[dict]):
    """Write a run folder holding predictions.jsonl; returns the folder."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def write_review_runs(root, questions=REVIEW_QUESTIONS):
    """Two runs, ``root/maml`` and ``root/multitask``, answering the same questions."""
    from pathlib import Path

    root = Path(root)
    return (write_run(root / "maml", [review_record(*q, "maml") for q in questions]),
            write_run(root / "multitask", [review_record(*q, "multitask") for q in questions]))


class LiveServer:
    """A real uvicorn server on a free loopback port, in a thread (a context manager).

    The socket is bound before the server starts, so there is no race for the port.
    """

    def __init__(self, app) -> None:
        import socket

        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    def __enter__(self) -> LiveServer:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the review server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()

"""`metarag serve`: one HTTP service holds the base model once and answers for any adapted domain.

- `registry`: what a domain is on disk (checked when registered) and the byte-bounded
  LRU of loaded domains;
- `engine`: the one base model, with a domain's weights, corpus and settings swapped in;
- `batcher`: the worker thread that owns the engine and batches requests per domain;
- `service`: those three wired together; `app`: the FastAPI app over it;
- `security`: the API key, the loopback rule, the body-size bound.
"""

from metarag.serve.service import ServeSettings, Service

__all__ = ["ServeSettings", "Service"]

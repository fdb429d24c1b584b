"""Build a RAGModel from its config, and move its weights in and out of checkpoints.

A checkpoint holds the weights that were trained (LoRA, a soft prompt, the query
encoder, top layers... or everything when everything trains: `model_weights`),
the `ModelConfig`, and the identity of the base it was trained on (`base_record`:
the generator's and the encoder's ``base_identity`` and the build seed, under the
state key ``"base"``). With Gemma 3 270M and the default LoRA that is ~3 MB
instead of a 1 GB copy of the base.

Loading (`load_trained`, `load_weights`) rebuilds the model from its config, the
base weights coming from their own files, refuses a checkpoint trained on another
base (naming both identities), then loads the saved weights strictly: every saved
name must be a weight of the model, with the same shape. Checkpoints written
before this (no ``"base"`` in the state) hold every weight and still load; they
must then cover the whole model.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarag.checkpoint import Checkpoint, CheckpointError
from metarag.data.schema import Passage
from metarag.generation.adapters import LoRAConfig
from metarag.generation.precision import check_precision
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
            The default: rank 8 on Gemma's q/k/v/o attention projections in its top 4
            blocks (``LoRAConfig.top_layers``).
        soft_prompt_tokens: Length of a trainable soft prompt put before every
            generator source (0: none); preset "soft_prompt". Counts against
            ``max_source_length``.
        precision: The generator's matrix products: "auto" (bfloat16 for a pretrained
            decoder-only LM where the hardware has native bfloat16, as this project's
            CPUs do; float32 otherwise and for tiny models), "float32" or "bfloat16".
            Weights, gradients and losses stay float32 (`metarag.generation.precision`).
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
    precision: str = "auto"

    def __post_init__(self) -> None:
        check_precision(self.precision)
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
        self.use_corpus(dense.passages, embeddings=dense.stored_embeddings(), show_progress=True,
                        language=dense.language)


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
    generator.set_precision(config.precision)
    if config.soft_prompt_tokens:
        add_soft_prompt(generator, config.soft_prompt_tokens)
    if config.lora is not None:
        add_lora(generator, config.lora, seed=seed)
    model = RAGModel(query, generator, config.rag)
    model.train()
    return BuiltModel(model, passage)


def model_weights(model: RAGModel, trained: Collection[str] | None = None
                  ) -> dict[str, torch.Tensor]:
    """What a checkpoint holds to restore the model: the trained weights over its base.

    Args:
        model: The model.
        trained: Names of the weights that were trained (parameter names from
            `metarag.meta.params.select_params`, or state-dict keys); None for all.

    Returns:
        The whole state dict (no passage buffers) when ``trained`` is None or covers
        every parameter; otherwise only the ``trained`` entries. Buffers and the
        untrained weights come back from the base when the model is rebuilt.

    Raises:
        ValueError: A name is not in the model's state dict.
    """
    state = model.state_dict()
    if trained is None:
        return dict(state)
    wanted = set(trained)
    unknown = sorted(wanted - state.keys())
    if unknown:
        raise ValueError(f"{len(unknown)} trained names are not weights of the model, e.g. "
                         f"{unknown[0]!r}")
    if {n for n, _ in model.named_parameters()} <= wanted:
        return dict(state)  # everything trained: the checkpoint is the whole model
    return {k: v for k, v in state.items() if k in wanted}


AUX_PREFIX = "aux."
"""Checkpoint tensors under this prefix belong to the training method (e.g. Meta-SGD's
learned inner rates), not to the model; `load_weights` leaves them alone."""

BASE_KEY = "base"
"""State key of the base a checkpoint was trained on (`base_record`)."""


def base_record(model: RAGModel, *, seed: int) -> dict[str, Any]:
    """What a checkpoint records about the weights it does not hold.

    Args:
        model: The model whose trained weights are saved.
        seed: The seed it was built with (`build_model`): it draws what starts
            random (LoRA's A, a warm start's new layers), so a rebuild must reuse it.

    Returns:
        ``{"generator": <Generator.base_identity>, "encoder": <DenseEncoder.base_identity>,
        "seed": seed}``; an identity is None where it is unknown (a hub name).
    """
    return {"generator": getattr(model.generator, "base_identity", None),
            "encoder": getattr(model.query_encoder, "base_identity", None),
            "seed": seed}


def build_seed(state: Mapping[str, Any]) -> int:
    """The seed a checkpoint's model was built with (0 for checkpoints that predate it)."""
    return int((state.get(BASE_KEY) or {}).get("seed", 0))


def check_base(model: RAGModel, checkpoint: Checkpoint) -> None:
    """Refuse a checkpoint whose recorded base differs from the model's.

    A small checkpoint only makes sense on the base it was trained over; a mismatch
    (another GGUF, another encoder, another tiny seed) would load without an error
    and silently answer with another model. Unknown identities (None on either
    side) cannot be compared and pass with a warning.

    Raises:
        CheckpointError: Naming the part, and both identities.
    """
    recorded = checkpoint.state.get(BASE_KEY)
    if not recorded:
        return  # an older, full checkpoint: it carries every weight itself
    mine = base_record(model, seed=0)
    for part in ("generator", "encoder"):
        theirs, ours = recorded.get(part), mine[part]
        if theirs is None or ours is None:
            if theirs != ours:
                logger.warning("%s: cannot check the base model.%s (recorded %s, model %s)",
                               checkpoint.path, part, theirs, ours)
        elif theirs != ours:
            raise CheckpointError(
                f"checkpoint {checkpoint.path} was trained on base {_short(theirs)}, but "
                f"model.{part} loads {_short(ours)}: its weights only fit the base they were "
                f"trained over. Point model.{part} at that base (the config in its state.json "
                "names it) or retrain on this one.")


def _short(identity: str) -> str:
    # sha256 digests are long; 16 hex digits name them unambiguously in a message.
    kind, _, digest = identity.partition(":")
    return f"{kind}:{digest[:16]}…" if kind == "sha256" and len(digest) > 16 else identity


def fitting_weights(model: RAGModel, checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights, checked to fit ``model`` (the base and every shape).

    A checkpoint with a base record (`base_record`) may hold any part of the model
    and must have been trained on the model's base; an older one must hold all of it.
    Either way every saved weight must exist in the model with the same shape.
    Training-method tensors (`AUX_PREFIX`) are left out.

    Raises:
        CheckpointError: Another base (`check_base`), or weights that do not fit,
            with the first mismatches named.
    """
    check_base(model, checkpoint)
    weights = {k: v for k, v in checkpoint.model.items() if not k.startswith(AUX_PREFIX)}
    check_fit(checkpoint.path, {k: tuple(v.shape) for k, v in weights.items()},
              {k: tuple(v.shape) for k, v in model.state_dict().items()},
              partial=bool(checkpoint.state.get(BASE_KEY)))
    return weights


def check_fit(path: str | Path, saved: Mapping[str, tuple[int, ...]],
              expected: Mapping[str, tuple[int, ...]], *, partial: bool) -> None:
    """Refuse saved weight shapes that do not fit a model's (`fitting_weights`, by shapes only).

    Args:
        path: The checkpoint, for the message.
        saved: Saved weight name -> shape.
        expected: The model's state-dict name -> shape.
        partial: The checkpoint may hold only part of the model (it has a base record).

    Raises:
        CheckpointError: Missing (when not ``partial``), unexpected or reshaped weights,
            the first of each named.
    """
    missing = [] if partial else sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(saved) if expected[k] != saved[k])
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if reshaped:
            k = reshaped[0]
            parts.append(f"{len(reshaped)} with other shapes (e.g. {k}: saved {saved[k]}, "
                         f"model {expected[k]})")
        raise CheckpointError(f"{path}: was saved from another model config: "
                              + "; ".join(parts) + ". Use the config the checkpoint was "
                              "trained with (it is in its state.json).")


def load_weights(model: RAGModel, checkpoint: Checkpoint) -> None:
    """Load a checkpoint's weights into a model built from its config.

    Raises:
        CheckpointError: Another base, or weights that do not fit (`fitting_weights`).
    """
    weights = fitting_weights(model, checkpoint)
    # Names and shapes are checked, so strict=False only skips the base's weights.
    model.load_state_dict(weights, strict=not checkpoint.state.get(BASE_KEY))


MODEL_CONFIG_KEY = "model_config"


def checkpoint_config(checkpoint: Checkpoint) -> ModelConfig:
    """The `ModelConfig` a checkpoint's model was built from (its state's ``model_config``).

    Raises:
        CheckpointError: The state has none (not written by a metarag command).
        ConfigError: It does not validate, naming the field.
    """
    from metarag.config import from_dict

    if MODEL_CONFIG_KEY not in checkpoint.state:
        raise CheckpointError(f"{checkpoint.path}: state.json has no {MODEL_CONFIG_KEY!r}; "
                              "it was not written by `metarag train`")
    saved = dict(checkpoint.state[MODEL_CONFIG_KEY])
    # Fields added since: an older checkpoint runs as it was trained.
    lora = saved.get("lora")
    if isinstance(lora, dict) and "top_layers" not in lora:
        saved["lora"] = {**lora, "top_layers": None}  # LoRA went into every block
    saved.setdefault("precision", "float32")
    return from_dict(ModelConfig, saved,
                     source=str(checkpoint.path / "state.json"), prefix=MODEL_CONFIG_KEY + ".")


def load_trained(path: str, *, seed: int | None = None) -> tuple[BuiltModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint (or run) folder: config from its state, then weights.

    Args:
        path: A checkpoint folder, or a run folder (its latest checkpoint).
        seed: The build seed; None for the one the checkpoint records (0 if none).

    Returns:
        The model, in eval mode, and the checkpoint's JSON state.

    Raises:
        CheckpointError: No model config in the state, another base, or weights
            that do not fit the config (`load_weights`).
    """
    from metarag.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    config = checkpoint_config(checkpoint)
    built = build_model(config, seed=build_seed(checkpoint.state) if seed is None else seed)
    load_weights(built.model, checkpoint)
    built.model.eval()
    return built, checkpoint.state

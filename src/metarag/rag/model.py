"""RAGModel: a trainable query encoder over fixed passage embeddings, plus a generator.

    question --query encoder--> q (B, D) --q @ E.T--> top-k passages (B, K)
             --generator(question + passage z)--> log p(y|x,z) (B, K)
             --RAG-sequence marginal--> loss

Passage embeddings E (N, D) are computed once by the (frozen) passage encoder
and held as a buffer: the generator's loss trains the query encoder through
the retrieval scores q . e_z (Lewis et al. 2020), the passage side stays put,
so nothing needs re-indexing during training. The module is never mutated by
meta-learning: `torch.func.functional_call(model, params, (questions, answers))`
runs it with any parameter dict.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from metarag.data.schema import Passage
from metarag.generation.prompt import Demo, make_source, passage_as_context
from metarag.rag.losses import passage_posterior, rag_sequence_nll

Fusion = Literal["sequence", "concat"]


@dataclass
class RAGConfig:
    """How the model retrieves and combines passages.

    Attributes:
        k: Passages retrieved per question (and read by the generator: each costs a
            Gemma sequence in every step and answer, so the default is 1; raise it
            where recall@1 is low and time allows).
        temperature: Divides retrieval scores (cosine, in [-1, 1]) before the
            softmax over the top-k; 0.05 matches MiniLM's contrastive training scale.
        train_retriever: Let the generator's loss train the query encoder.
        fusion: "sequence" marginalises over passages (RAG-sequence); "concat"
            feeds all k passages in one input (Fusion-in-Decoder-style); the
            retriever then gets no gradient from the generator.
        max_new_tokens: Answer length limit when generating.
        decoding: "thorough" (RAG-sequence: one candidate per passage, each
            rescored under every passage; K generations + K*K scorings per
            question) or "fast" (one batched generation from the top passage;
            citations ranked by retrieval), the default: with k = 1 both give the
            same answer, and "fast" batches the questions.
        retriever: "dense" (the trainable query encoder over passage embeddings) or
            "bm25" (sparse, fixed: for languages the encoder does not read, e.g.
            Chinese with MiniLM; the retriever then gets no gradient).
        no_repeat_ngram: When > 0, an answer never repeats an n-gram of this many
            tokens: greedy decoding of an undertrained generator can loop
            ("the results suggest that the results suggest ..."). 0 (off) keeps
            plain greedy decoding, which the results in docs/RESULTS.md used.
    """

    k: int = 1
    temperature: float = 0.05
    train_retriever: bool = True
    fusion: Fusion = "sequence"
    max_new_tokens: int = 32
    decoding: Literal["thorough", "fast"] = "fast"
    no_repeat_ngram: int = 0
    retriever: Literal["dense", "bm25"] = "dense"

    def __post_init__(self) -> None:
        if self.retriever not in ("dense", "bm25"):
            raise ValueError(f"retriever must be 'dense' or 'bm25', got {self.retriever!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.fusion not in ("sequence", "concat"):
            raise ValueError(f"fusion must be 'sequence' or 'concat', got {self.fusion!r}")
        if self.decoding not in ("thorough", "fast"):
            raise ValueError(f"decoding must be 'thorough' or 'fast', got {self.decoding!r}")
        if self.no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0 (0: off), got {self.no_repeat_ngram}")


@dataclass
class RAGOutput:
    """Training-time outputs for a batch of B questions and K passages each."""

    loss: torch.Tensor          # scalar: mean over B of the per-token marginal NLL
    nll: torch.Tensor           # (B,) -log p(y|x), summed over answer tokens
    doc_logits: torch.Tensor    # (B, K) retrieval scores / temperature
    seq_loglik: torch.Tensor    # (B, K) log p(y|x,z); (B, 1) with concat fusion
    passage_ids: list[list[str]]


DEFAULT_ENCODER_CACHE_BYTES = 512 * 2**20


def same_tensors(weights: list[torch.Tensor], stored: list[torch.Tensor],
                 versions: list[int]) -> bool:
    """Whether ``weights`` are the very ``stored`` tensors, unmodified since (version counters).

    What a cache of the frozen encoder's outputs checks before reuse: under
    ``functional_call`` other tensors may be swapped in, and an optimizer step
    updates the same tensors in place.
    """
    return (len(weights) == len(stored) and all(a is b for a, b in zip(weights, stored))
            and [w._version for w in weights] == versions)


class EncoderCache:
    """The frozen generator encoder's outputs per source, kept across batches and meta-steps.

    One source (a question with its passage, tokenised) encodes to the same states
    whenever the encoder's weights are the same: in a right-padded batch its real
    positions attend only to each other. Meta-training resamples episodes from finite
    splits, so the same sources recur from one meta-step to the next; this keeps
    their states, least recently used dropped first once ``max_bytes`` is exceeded.

    Entries are keyed by the source's token ids (padding stripped) and hold its
    (n, H) states, n = its real tokens, without autograd history. A batch is
    re-assembled with zeros at padded positions: the decoder's cross-attention masks
    those, so they add exact zeros to the loss and its gradients of any order. Any
    change to the encoder's weights (other tensors, or an in-place update) empties
    the cache. `RAGModel` consults it only when `ForwardCache` may reuse the
    encoder at all (encoder frozen and in eval mode).

    Args:
        max_bytes: Bound on the bytes of stored states; 0 turns the cache off.

    Attributes:
        hits, misses: Sources found and sources encoded (for tests and benchmarks).
    """

    def __init__(self, max_bytes: int = DEFAULT_ENCODER_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # most recent last
        self.nbytes = 0
        self.weights: list[torch.Tensor] = []
        self.versions: list[int] = []
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        """Forget every source (the hit and miss counts stay)."""
        self.entries.clear()
        self.nbytes = 0

    def encode(self, generator: nn.Module, input_ids: torch.Tensor,
               attention_mask: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """(B, S, H) encoder states of a source batch, encoding only unseen sources.

        Args:
            generator: An encoder-decoder `metarag.generation.Generator`.
            input_ids, attention_mask: (B, S) right-padded sources.
            weights: The encoder's weights as this call uses them (identity and
                version counters are compared with those of the stored entries).
        """
        return self._lookup(input_ids, attention_mask, weights, generator.encode, left=False)

    def _lookup(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                weights: list[torch.Tensor], compute: Any, *, left: bool) -> torch.Tensor:
        """(B, S, H) states of a padded batch; ``compute(ids, mask)`` runs for unseen rows only.

        A row's key is its real tokens; ``left`` says on which side the padding is.
        """
        if not same_tensors(weights, self.weights, self.versions):
            self.clear()
            self.weights, self.versions = weights, [w._version for w in weights]
        b, s = input_ids.shape
        lengths = attention_mask.sum(-1)                                             # (B,)
        positions = torch.arange(s, device=attention_mask.device)
        real = positions >= s - lengths[:, None] if left else positions < lengths[:, None]
        if not self.max_bytes or not torch.equal(attention_mask.bool(), real):
            return compute(input_ids, attention_mask)  # off, or not padded on one side only

        def span(n: int, width: int) -> slice:  # a row's real tokens in a batch this wide
            return slice(width - n, width) if left else slice(0, n)

        lengths = lengths.tolist()
        ids = input_ids.cpu().numpy()
        keys = [ids[i, span(n, s)].tobytes() for i, n in enumerate(lengths)]
        found = {k: self.entries[k] for k in keys if k in self.entries}
        for k in found:
            self.entries.move_to_end(k)
        todo = list(dict.fromkeys(k for k in keys if k not in found))  # a source may repeat
        rows = [keys.index(k) for k in todo]
        self.hits += b - len(rows)
        self.misses += len(rows)
        if len(rows) == b:
            # All new: the same call as without a cache, padded positions included.
            states = compute(input_ids, attention_mask)                               # (B, S, H)
            self._store({k: states[i, span(lengths[i], s)] for k, i in zip(todo, rows)})
            return states
        if rows:
            width = max(lengths[i] for i in rows)
            cols = span(width, s)
            fresh = compute(input_ids[rows, cols], attention_mask[rows, cols])
            new = {k: fresh[j, span(lengths[i], width)]
                   for j, (k, i) in enumerate(zip(todo, rows))}
            found.update(new)
            self._store(new)
        first = next(iter(found.values()))
        states = first.new_zeros(b, s, first.shape[-1])                              # (B, S, H)
        for i, k in enumerate(keys):
            states[i, span(lengths[i], s)] = found[k]
        return states

    def _store(self, new: dict[bytes, torch.Tensor]) -> None:
        for key, value in new.items():
            value = value.detach().clone()  # its own storage, not a view of the batch
            size = value.numel() * value.element_size()
            if size > self.max_bytes:
                continue
            self.entries[key] = value
            self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()


class PrefixCache(EncoderCache):
    """A decoder-only generator's frozen bottom layers: their output per sequence, kept.

    When only the top layers adapt (``top_layers:N``, or only weights above some
    layer), the hidden states entering the first adapted layer do not change from
    one inner step, meta-step or adaptation step to the next: the embedding and the
    layers below are a constant function of the tokens. As `EncoderCache` does for
    BERT2BERT's encoder, this keeps those states per sequence and runs only the
    layers from ``from_layer`` up (`Generator.forward(prefix_states=...)`).

    A decoder-only sequence is the prompt *and* the answer (the answer's positions
    pass through the frozen layers too), so the key is the row's real token ids:
    the question, its passages (demos included) and the answer. Another passage or
    corpus is another key. Rows are left-padded; a batch is re-assembled with zeros
    at padded positions, which the top layers' masks never let a real position see.
    Any change to the frozen weights (other tensors, an in-place update) empties it.

    Args:
        from_layer: The first layer that runs on every call (1..layers).
        max_bytes: Bound on the bytes of stored states; 0 keeps only the per-batch
            reuse across inner steps (`ForwardCache`), nothing per sequence.
    """

    def __init__(self, from_layer: int, max_bytes: int = DEFAULT_ENCODER_CACHE_BYTES) -> None:
        if from_layer < 1:
            raise ValueError(f"from_layer must be >= 1 (0 would cache nothing), got {from_layer}")
        super().__init__(max_bytes)
        self.from_layer = from_layer

    def states(self, generator: nn.Module, input_ids: torch.Tensor,
               attention_mask: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        """(B, L, H) states entering layer ``from_layer``, running the bottom layers on unseen rows.

        Args:
            generator: A decoder-only `metarag.generation.Generator`.
            input_ids, attention_mask: (B, L) left-padded sequences.
            weights: The bottom layers' weights as this call uses them.
        """
        def compute(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return generator.prefix_states(ids, mask, self.from_layer)

        return self._lookup(input_ids, attention_mask, weights, compute, left=True)


def source_cache(model: nn.Module, adapted: Sequence[str],
                 max_bytes: int = DEFAULT_ENCODER_CACHE_BYTES) -> EncoderCache:
    """The per-source cache of a RAG model's frozen generator part, for this adapted set.

    BERT2BERT (and other encoder-decoders): an `EncoderCache` (used while the encoder
    is frozen). Decoder-only: a `PrefixCache` from the lowest adapted layer, when
    nothing below it adapts (`Generator.frozen_layers`); otherwise ``EncoderCache(0)``,
    i.e. no cache (a decoder-only model never reads an `EncoderCache`).

    Args:
        model: The `RAGModel`.
        adapted: The names of the parameters that adapt (as ``named_parameters()``).
        max_bytes: The cache's bound (``encoder_cache_mb`` of a run, in bytes).
    """
    generator = getattr(model, "generator", None)
    if generator is None or generator.is_encoder_decoder:
        return EncoderCache(max_bytes)
    mine = [n[len("generator."):] for n in adapted if n.startswith("generator.")]
    first = generator.frozen_layers(mine)
    return PrefixCache(first, max_bytes) if first else EncoderCache(0)


@dataclass
class ForwardCache:
    """What `RAGModel.forward` may reuse from an earlier call on the same batch.

    An inner loop scores one support set several times with slightly different
    weights. Three parts of that work do not depend on the adapted weights and are
    kept here: the tokenised questions; the generator's inputs, as long as
    retrieval picks the same top-k passages (it is re-run every call, so an
    adapted query encoder still moves the scores and, if it changes the top-k,
    the inputs are rebuilt); and the generator encoder's outputs, when that
    encoder is frozen (no weight of it requires grad), deterministic (eval
    mode) and its weights are the very tensors, unmodified, that produced them.
    With the default BERT2BERT model that encoder is ~80% of a forward pass.
    When it must run, ``sources`` (an `EncoderCache`, shared by many batches and
    living across meta-steps) supplies the states of sources seen before. A
    decoder-only generator's frozen bottom layers are reused the same way, when
    ``sources`` is a `PrefixCache` (which says from which layer on the model runs).

    The loss, and its gradients of any order, are those of an uncached call:
    everything reused is a constant of the computation. A cache belongs to one
    batch; `RAGModel.forward` resets it when called with another batch, corpus or
    set of demos (in-context examples change every prompt).

    Attributes:
        hits: Calls that reused the encoder outputs (for tests and benchmarks).
        misses: Calls that had to run the encoder (or could not reuse it).
    """

    questions: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    query_batch: dict[str, torch.Tensor] | None = None   # tokenised questions
    demos: tuple[Demo, ...] = ()                         # in every prompt of the entries below
    corpus: torch.Tensor | None = None                   # passage embeddings of the entries below
    corpus_version: int = -1
    top: torch.Tensor | None = None                      # (B, K) passages of generator_batch
    generator_batch: dict[str, torch.Tensor] | None = None
    encoder_weights: list[torch.Tensor] = field(default_factory=list)
    encoder_versions: list[int] = field(default_factory=list)
    # (B*K, S, H) encoder outputs, or a decoder-only model's (B*K, L, H) prefix states
    # (`PrefixCache`); no autograd history. The weights are those that produced them.
    encoder_states: torch.Tensor | None = None
    sources: EncoderCache | None = None                  # per-source states across batches
    hits: int = 0
    misses: int = 0

    def bind(self, questions: Sequence[str], answers: Sequence[str], corpus: torch.Tensor,
             demos: tuple[Demo, ...] = ()) -> None:
        """Keep what is valid for this batch, corpus and demos; drop the rest."""
        questions, answers = tuple(questions), tuple(answers)
        if (questions, answers) != (self.questions, self.answers):
            self.questions, self.answers, self.query_batch = questions, answers, None
            self._drop_generator_inputs()
        if demos != self.demos:  # other prompts: other generator inputs
            self.demos = demos
            self._drop_generator_inputs()
        if corpus is not self.corpus or corpus._version != self.corpus_version:
            self.corpus, self.corpus_version = corpus, corpus._version
            self._drop_generator_inputs()

    def _drop_generator_inputs(self) -> None:
        self.top = self.generator_batch = self.encoder_states = None
        self.encoder_weights, self.encoder_versions = [], []


@dataclass(frozen=True)
class Citation:
    """A passage an answer rests on."""

    passage_id: str
    title: str
    text: str
    weight: float          # p(z|x,y) for RAG-sequence; p(z|x) with concat fusion
    retrieval_score: float  # cosine similarity of question and passage


@dataclass(frozen=True)
class CorpusState:
    """What a `RAGModel` retrieves from (`RAGModel.corpus_state`): kept to swap corpora.

    Attributes:
        passages: The passages, in row order.
        embeddings: (N, D) passage embeddings; (N, 0) with BM25 retrieval.
        bm25: The BM25 index with ``rag.retriever == "bm25"``, else None.
        rows: Passage id -> row, for BM25 hits.
    """

    passages: list[Passage]
    embeddings: torch.Tensor
    bm25: Any = None
    rows: dict[str, int] = field(default_factory=dict)


@dataclass
class Answer:
    question: str
    answer: str
    citations: list[Citation]


class RAGModel(nn.Module):
    """Retriever + generator, trained jointly by the RAG-sequence marginal likelihood.

    Args:
        query_encoder: A `metarag.retrieval.DenseEncoder`; its ``model`` becomes the
            trainable ``query_model`` sub-module.
        generator: A `metarag.generation.Generator`.
        config: Retrieval and fusion settings.
    """

    def __init__(self, query_encoder: Any, generator: nn.Module,
                 config: RAGConfig | None = None) -> None:
        super().__init__()
        self.query_model = query_encoder.model
        self.generator = generator
        self.config = config or RAGConfig()
        # The wrapper gives tokenisation and pooling; its .model is query_model,
        # so functional_call's parameter swap reaches it.
        self._query_encoder = query_encoder
        self.passages: list[Passage] = []
        # In-context examples put in every generator prompt (`use_demos`).
        self.demos: tuple[Demo, ...] = ()
        self._bm25: Any = None  # BM25Index, with rag.retriever == "bm25"
        self._row: dict[str, int] = {}
        self.register_buffer("passage_embeddings",
                             torch.empty(0, query_encoder.dim), persistent=False)

    @property
    def query_encoder(self) -> Any:
        """The `DenseEncoder` wrapping ``query_model`` (tokenizer, pooling, length limit)."""
        return self._query_encoder

    # ---- corpus ----------------------------------------------------------------------

    def set_corpus(self, passages: Sequence[Passage], embeddings: np.ndarray | torch.Tensor | None,
                   *, language: str = "en") -> None:
        """Use these passages and their (N, D) unit-length embeddings for retrieval.

        With ``config.retriever == "bm25"`` the embeddings are not needed (None): a
        BM25 index over the passages in ``language`` is built instead.
        """
        if self.config.retriever == "bm25":
            from metarag.retrieval import BM25Index

            self.passages = list(passages)
            self._bm25 = BM25Index.build(self.passages, language=language)
            self._row = {p.id: i for i, p in enumerate(self.passages)}
            self.passage_embeddings = torch.zeros(len(passages), 0,
                                                  device=self.passage_embeddings.device)
            return
        emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
        if emb.ndim != 2 or emb.shape[0] != len(passages):
            raise ValueError(f"expected ({len(passages)}, D) embeddings, got {tuple(emb.shape)}")
        if emb.shape[1] != self._query_encoder.dim:
            raise ValueError(f"passage embeddings are {emb.shape[1]}-d but the query encoder "
                             f"gives {self._query_encoder.dim}-d vectors; embed the passages "
                             "with the matching passage encoder")
        self.passages = list(passages)
        self.passage_embeddings = emb.to(self.passage_embeddings.device)

    def corpus_state(self) -> CorpusState:
        """The current corpus, to put back later with `restore_corpus` (nothing is copied)."""
        bm25 = self._bm25 if self.config.retriever == "bm25" else None
        return CorpusState(self.passages, self.passage_embeddings, bm25,
                           self._row if bm25 is not None else {})

    def restore_corpus(self, state: CorpusState) -> None:
        """Retrieve from a corpus kept by `corpus_state`, without re-embedding or re-indexing.

        Raises:
            ValueError: The state was taken under another retriever kind than the
                model's ``config.retriever``.
        """
        if (state.bm25 is not None) != (self.config.retriever == "bm25"):
            raise ValueError(f"the corpus state was kept for another retriever than "
                             f"{self.config.retriever!r}")
        self.passages = state.passages
        self.passage_embeddings = state.embeddings
        self._bm25, self._row = state.bm25, state.rows

    def use_demos(self, examples: Sequence[Any], k: int | None = None) -> tuple[Demo, ...]:
        """Put k solved examples (`QAExample`) in every prompt: in-context k-shot.

        Each demo shows its question, first reference answer and a passage: its gold
        passage when the corpus has it, else the passage retrieval ranks first for it
        (what the model would see for that question). ``k=0`` or no examples turns
        demos off. Returns the demos.
        """
        examples = list(examples)[:k] if k is not None else list(examples)
        if not examples:
            self.demos = ()
            return self.demos
        by_id = {p.id: p for p in self.passages}
        context: list[Passage | None] = [
            next((by_id[g] for g in ex.gold_passage_ids if g in by_id), None) for ex in examples]
        missing = [i for i, c in enumerate(context) if c is None]
        if missing and self.passages:
            with torch.no_grad():
                _, top = self.retrieve([examples[i].question for i in missing], k=1)
            for i, row in zip(missing, top.tolist()):
                context[i] = self.passages[row[0]]
        self.demos = tuple(Demo(" ".join(ex.question.split()), ex.answers[0],
                                passage_as_context(c) if c is not None else "")
                           for ex, c in zip(examples, context))
        return self.demos

    @contextmanager
    def demos_while(self, examples: Sequence[Any], k: int | None = None
                    ) -> Iterator[tuple[Demo, ...]]:
        """`use_demos` for the length of a block; the demos from before come back after."""
        before = self.demos
        try:
            yield self.use_demos(examples, k)
        finally:
            self.demos = before

    # ---- retrieval -------------------------------------------------------------------

    def retrieve(self, questions: Sequence[str], k: int | None = None, *,
                 cache: ForwardCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k passages per question.

        Args:
            questions: B questions.
            k: Passages per question; the config's ``k`` by default.
            cache: Reuse (or store) the tokenised questions (see `ForwardCache`).

        Returns:
            doc_logits: (B, K) scores / temperature, differentiable in the query
                encoder when ``train_retriever``.
            top: (B, K) passage indices into ``self.passages``.
        """
        _check_questions(questions)
        if not self.passages:
            raise ValueError("the model has no corpus to retrieve from: call set_corpus() "
                             "with the passages of the task")
        k = min(k or self.config.k, len(self.passages))
        if self.config.retriever == "bm25":
            return self._retrieve_bm25(questions, k)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.train_retriever):
            batch = cache.query_batch if cache is not None else None
            if batch is None:
                batch = self._query_encoder.tokenize(list(questions))
                if cache is not None:
                    cache.query_batch = batch
            q = self._query_encoder.embed(batch["input_ids"], batch["attention_mask"])  # (B, D)
        scores = q @ self.passage_embeddings.T                                        # (B, N)
        top = scores.detach().topk(k, dim=-1).indices                                  # (B, K)
        doc_logits = scores.gather(1, top) / self.config.temperature
        if not self.config.train_retriever:
            doc_logits = doc_logits.detach()
        return doc_logits, top

    def _retrieve_bm25(self, questions: Sequence[str], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`retrieve` by BM25: scores (B, K) as doc logits, no gradient.

        A question sharing fewer than k terms with the corpus is topped up with the
        first passages not retrieved, at a score below every hit.
        """
        hits = self._bm25.search(list(questions), k)
        rows, logits = [], []
        for ids, scores in zip(hits.ids, hits.scores):
            row = [self._row[i] for i in ids]
            taken = set(row)
            row += [j for j in range(len(self.passages)) if j not in taken][:k - len(row)]
            floor = min(scores, default=0.0) - 1.0
            logits.append(list(scores) + [floor] * (k - len(scores)))
            rows.append(row)
        device = self.passage_embeddings.device
        return torch.tensor(logits, device=device), torch.tensor(rows, device=device)

    # ---- training --------------------------------------------------------------------

    def forward(self, questions: Sequence[str], answers: Sequence[str], *,
                cache: ForwardCache | None = None) -> RAGOutput:
        """Marginal negative log-likelihood of the reference answers.

        Args:
            questions: B questions.
            answers: The B reference answers.
            cache: Work to reuse from an earlier call on the same batch, e.g. one
                per support set across inner steps (see `ForwardCache`); the
                result is the same with or without it.
        """
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        if cache is not None:
            cache.bind(questions, answers, self.passage_embeddings, self.demos)
        doc_logits, top = self.retrieve(questions, cache=cache)
        b, k = top.shape
        ids = [[self.passages[j].id for j in row] for row in top.tolist()]
        batch = None
        if cache is not None and cache.top is not None and torch.equal(cache.top, top):
            batch = cache.generator_batch
        if self.config.fusion == "sequence":
            if batch is None:
                sources = [make_source(q, [self.passages[j]], self.demos)
                           for q, row in zip(questions, top.tolist()) for j in row]
                targets = [a for a in answers for _ in range(k)]
                batch = self._new_generator_batch(sources, targets, top, cache)
            seq_loglik = self.generator(**batch, **self._frozen_states(batch, cache)
                                        ).view(b, k)                                   # (B, K)
            nll = rag_sequence_nll(doc_logits, seq_loglik)
            n_tokens = (batch["labels"] != -100).sum(-1).view(b, k)[:, 0]
        else:
            if batch is None:
                sources = [make_source(q, [self.passages[j] for j in row], self.demos)
                           for q, row in zip(questions, top.tolist())]
                batch = self._new_generator_batch(sources, list(answers), top, cache)
            seq_loglik = self.generator(**batch, **self._frozen_states(batch, cache)).view(b, 1)
            nll = -seq_loglik[:, 0]
            n_tokens = (batch["labels"] != -100).sum(-1)
        # Per-token loss, so long answers do not drown short ones in a batch.
        loss = (nll / n_tokens.clamp(min=1)).mean()
        return RAGOutput(loss, nll, doc_logits, seq_loglik, ids)

    def _new_generator_batch(self, sources: list[str], targets: list[str], top: torch.Tensor,
                             cache: ForwardCache | None) -> dict[str, torch.Tensor]:
        batch = self.generator.tokenize(sources, targets)
        if cache is not None:
            cache._drop_generator_inputs()
            cache.top, cache.generator_batch = top.clone(), batch
        return batch

    def _frozen_states(self, batch: dict[str, torch.Tensor], cache: ForwardCache | None
                       ) -> dict[str, Any]:
        """Generator arguments that reuse its frozen part's outputs, from the cache or computed.

        BERT2BERT: ``encoder_states``. Decoder-only with a `PrefixCache`:
        ``prefix_states`` and ``from_layer``. Empty (the generator runs everything
        itself) without a cache, without a `PrefixCache` for a decoder-only model,
        and when reuse would not be exact: a weight of the frozen part requires grad
        (it adapts, or gradients must reach it) or a module of it is in training
        mode (dropout draws new masks every call).
        """
        if cache is None:
            return {}
        sources = cache.sources
        if self.generator.is_encoder_decoder:
            frozen = [self.generator.model.get_encoder()]
            name, extra = "encoder_states", {}
        elif isinstance(sources, PrefixCache):
            frozen = self.generator.prefix_modules(sources.from_layer)
            name, extra = "prefix_states", {"from_layer": sources.from_layer}
        else:
            return {}
        # Under functional_call these are the tensors swapped in for this call.
        weights = [w for module in frozen for w in module.parameters()]
        if (any(w.requires_grad for w in weights)
                or any(m.training for module in frozen for m in module.modules())):
            cache.misses += 1
            return {}
        if cache.encoder_states is not None and same_tensors(weights, cache.encoder_weights,
                                                             cache.encoder_versions):
            cache.hits += 1
            return {name: cache.encoder_states, **extra}
        cache.misses += 1
        ids, mask = batch["input_ids"], batch["attention_mask"]
        with torch.no_grad():
            if name == "prefix_states":
                states = sources.states(self.generator, ids, mask, weights)
            elif sources is not None:
                states = sources.encode(self.generator, ids, mask, weights)
            else:
                states = self.generator.encode(ids, mask)
        cache.encoder_weights, cache.encoder_versions = weights, [w._version for w in weights]
        cache.encoder_states = states
        return {name: states, **extra}

    # ---- answering -------------------------------------------------------------------

    @torch.no_grad()
    def answer(self, questions: Sequence[str], *, k: int | None = None,
               max_new_tokens: int | None = None) -> list[Answer]:
        """Generate answers with the passages they cite.

        RAG-sequence decoding ("thorough", Lewis et al. 2020 §2.4): one candidate
        per retrieved passage, each rescored under every passage, and the
        candidate with the highest marginal p(y|x) wins; its citations are the
        passages ranked by p(z|x,y). Cost: K generations + K*K scorings per question.
        With ``config.decoding == "fast"``: greedy from the top passage, citations by p(z|x).
        """
        max_new = max_new_tokens or self.config.max_new_tokens
        decode = {"max_new_tokens": max_new, "no_repeat_ngram": self.config.no_repeat_ngram}
        doc_logits, top = self.retrieve(questions, k)
        # Retrieval scores as their retriever gives them (cosine, or BM25).
        scores = doc_logits if self.config.retriever == "bm25" else (
            doc_logits * self.config.temperature)
        fast = None
        if self.config.decoding == "fast":  # one batched generation for all questions
            keep = 1 if self.config.fusion == "sequence" else None  # concat reads all k
            fast = self.generator.generate(
                [make_source(q, [self.passages[j] for j in row[:keep]], self.demos)
                 for q, row in zip(questions, top.tolist())], **decode)
        results = []
        for i, question in enumerate(questions):
            passages = [self.passages[j] for j in top[i].tolist()]
            if fast is not None:
                text, weights = fast[i], doc_logits[i].softmax(-1)
            elif self.config.fusion == "concat":
                text = self.generator.generate([make_source(question, passages, self.demos)],
                                               **decode)[0]
                weights = doc_logits[i].softmax(-1)
            else:
                text, weights = self._best_candidate(question, passages, doc_logits[i], decode)
            order = weights.argsort(descending=True).tolist()
            results.append(Answer(question, text, [
                Citation(passages[z].id, passages[z].title, passages[z].text,
                         float(weights[z]), float(scores[i, z])) for z in order]))
        return results

    def _best_candidate(self, question: str, passages: list[Passage], doc_logits: torch.Tensor,
                        decode: dict[str, int]) -> tuple[str, torch.Tensor]:
        sources = [make_source(question, [p], self.demos) for p in passages]   # K inputs
        candidates = list(dict.fromkeys(self.generator.generate(sources, **decode)))
        c, k = len(candidates), len(sources)
        batch = self.generator.tokenize([s for _ in candidates for s in sources],
                                        [y for y in candidates for _ in sources])
        loglik = self.generator(**batch).view(c, k)                              # (C, K)
        logits = doc_logits.expand(c, k)
        best = int((-rag_sequence_nll(logits, loglik)).argmax())
        return candidates[best], passage_posterior(logits, loglik)[best]


def _check_questions(questions: Sequence[str]) -> None:
    if isinstance(questions, str):
        raise TypeError("questions must be a list of strings, not one string")
    if not questions:
        raise ValueError("no questions given")
    for i, q in enumerate(questions):
        if not q or not q.strip():
            raise ValueError(f"question {i} is empty")

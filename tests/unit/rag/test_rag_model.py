"""RAGModel on tiny real parts: the marginal loss, retriever gradients, answers with citations."""

import pytest
import torch

from metarag.data.schema import Passage
from metarag.generation import Generator
from metarag.generation.prompt import make_source
from metarag.rag.losses import passage_posterior, rag_sequence_nll
from metarag.rag.model import RAGConfig, RAGModel
from metarag.retrieval import DenseEncoder

PASSAGES = [
    Passage("p0", "Zorblat tablets are taken at 250 mg twice daily.", "Zorblat"),
    Passage("p1", "The Quillon bridge opened on 3 May 1911.", "Quillon bridge"),
    Passage("p2", "Marvex Holdings reported revenue of 4.2 million euros.", "Marvex"),
    Passage("p3", "Clause 14.3 covers termination of the Tessaly lease.", "Tessaly lease"),
]


@pytest.fixture(params=["bert2bert", "gemma3"])
def model(tiny_encoder_dir, request) -> RAGModel:
    encoder = DenseEncoder.from_pretrained(tiny_encoder_dir, attn_implementation="eager")
    generator = Generator.tiny(request.param, tokenizer=encoder.tokenizer, seed=0,
                               max_source_length=64, max_target_length=16)
    rag = RAGModel(encoder, generator, RAGConfig(k=3, temperature=0.1))
    # The passage side is a frozen copy: embed once, as an index would.
    rag.set_corpus(PASSAGES, encoder.encode([p.text for p in PASSAGES]))
    return rag


def test_rag_sequence_nll_by_hand():
    doc_logits = torch.tensor([[0.0, 0.0]])          # p(z|x) = 1/2 each
    seq_loglik = torch.log(torch.tensor([[0.2, 0.6]]))
    # p(y|x) = 0.5*0.2 + 0.5*0.6 = 0.4
    assert rag_sequence_nll(doc_logits, seq_loglik).item() == pytest.approx(-torch.log(
        torch.tensor(0.4)).item(), rel=1e-6)
    # p(z|x,y) = (0.1, 0.3) / 0.4
    torch.testing.assert_close(passage_posterior(doc_logits, seq_loglik),
                               torch.tensor([[0.25, 0.75]]))
    with pytest.raises(ValueError, match="same"):
        rag_sequence_nll(doc_logits, seq_loglik[:, :1])


def test_forward_gives_a_finite_loss_with_query_encoder_gradients(model):
    out = model(["What dose of Zorblat?", "When did the Quillon bridge open?"],
                ["250 mg twice daily", "3 May 1911"])
    assert out.doc_logits.shape == out.seq_loglik.shape == (2, 3)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    query_grads = [p.grad for p in model.query_model.parameters() if p.grad is not None]
    assert query_grads and any(g.abs().sum() > 0 for g in query_grads)
    gen_grads = [p.grad for p in model.generator.parameters() if p.grad is not None]
    assert any(g.abs().sum() > 0 for g in gen_grads)


def test_fixed_retriever_gets_no_gradient(model):
    model.config.train_retriever = False
    model(["What dose of Zorblat?"], ["250 mg twice daily"]).loss.backward()
    assert all(p.grad is None for p in model.query_model.parameters())


def test_training_raises_the_gold_passage_score(model):
    """A few joint steps on a toy task move the gold passage up the retrieval scores.

    BERT2BERT only: the tiny random decoder-only model memorises the four answers
    from the questions alone before it learns to read a passage, so its likelihoods
    stop depending on the passage and the retrieval signal fades (measured: the gold
    probability falls to uniform, 0.25, at lr 3e-3 and 1e-2, 25 and 60 steps).
    """
    if not model.generator.is_encoder_decoder:
        pytest.skip("the tiny decoder-only generator memorises instead of reading (docstring)")
    questions = ["Zorblat dose?", "Quillon bridge opening?", "Marvex revenue?",
                 "Tessaly lease termination clause?"]
    answers = ["250 mg twice daily", "3 May 1911", "4.2 million euros", "clause 14.3"]

    def gold_probability() -> float:
        with torch.no_grad():
            q = model.query_encoder.embed(**model.query_encoder.tokenize(questions))
            probs = (q @ model.passage_embeddings.T / model.config.temperature).softmax(-1)
        return probs.diagonal().mean().item()

    before = gold_probability()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(25):
        optimizer.zero_grad()
        model(questions, answers).loss.backward()
        optimizer.step()
    assert gold_probability() > before + 0.05


def test_functional_call_matches_the_module(model):
    params = dict(model.named_parameters())
    args = (["Marvex revenue?"], ["4.2 million euros"])
    direct = model(*args).loss
    functional = torch.func.functional_call(model, params, args).loss
    torch.testing.assert_close(functional, direct)
    # and a shifted parameter dict changes the result, so the swap is real
    shifted = {k: v + 0.05 if k.startswith("generator.") else v for k, v in params.items()}
    assert torch.func.functional_call(model, shifted, args).loss.item() != direct.item()


def test_concat_fusion(model):
    model.config.fusion = "concat"
    out = model(["Zorblat dose?"], ["250 mg twice daily"])
    assert out.seq_loglik.shape == (1, 1) and torch.isfinite(out.loss)


@pytest.mark.parametrize("fusion", ["sequence", "concat"])
def test_answers_cite_the_passages_they_used(model, fusion):
    model.config.fusion = fusion
    [answer] = model.answer(["What dose of Zorblat?"], max_new_tokens=5)
    assert isinstance(answer.answer, str)
    assert len(answer.citations) == 3
    assert {c.passage_id for c in answer.citations} <= {p.id for p in PASSAGES}
    weights = [c.weight for c in answer.citations]
    assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1, abs=1e-4)


def test_bad_input_is_named(model, tiny_encoder_dir):
    with pytest.raises(ValueError, match="question 1 is empty"):
        model(["ok?", "  "], ["a", "b"])
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        model(["a?", "b?"], ["a"])
    with pytest.raises(TypeError, match="list of strings"):
        model.answer("one string")
    empty = RAGModel(model.query_encoder, model.generator)
    with pytest.raises(ValueError, match="no corpus"):
        empty.answer(["anything?"])
    with pytest.raises(ValueError, match="embeddings"):
        empty.set_corpus(PASSAGES, torch.zeros(3, 32))


def test_k_larger_than_the_corpus_is_clamped(model):
    doc_logits, top = model.retrieve(["Zorblat?"], k=50)
    assert top.shape == (1, len(PASSAGES))


def test_fast_decoding_is_greedy_from_the_top_passage_in_one_batch(model):
    questions = ["What dose of Zorblat?", "When did the Quillon bridge open?"]
    _, top = model.retrieve(questions)
    model.config.decoding = "fast"
    answers = model.answer(questions, max_new_tokens=5)
    expected = model.generator.generate(
        [make_source(q, [PASSAGES[row[0]]]) for q, row in zip(questions, top.tolist())],
        max_new_tokens=5)
    assert [a.answer for a in answers] == expected
    assert [a.citations[0].passage_id for a in answers] == [PASSAGES[r[0]].id
                                                             for r in top.tolist()]
    with pytest.raises(ValueError, match="decoding must be"):
        RAGConfig(decoding="beam")


def test_no_repeat_ngram_reaches_every_decoding(model):
    questions = ["What dose of Zorblat?"]
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        RAGConfig(no_repeat_ngram=-1)
    for decoding in ("fast", "thorough"):
        model.config.decoding, model.config.no_repeat_ngram = decoding, 0
        [plain] = model.answer(questions, max_new_tokens=16)
        assert len(set(plain.answer.split())) < len(plain.answer.split())  # random weights loop
        model.config.no_repeat_ngram = 1
        [answer] = model.answer(questions, max_new_tokens=16)
        words = answer.answer.split()
        assert len(set(words)) == len(words), (decoding, answer.answer)


def test_a_kept_corpus_state_comes_back_without_re_embedding(model):
    """What `metarag serve` swaps between domains: passages + embeddings, or a BM25 index."""
    kept = model.corpus_state()
    before = model.retrieve(["Zorblat dose?", "Tessaly lease?"])[1]
    other = [Passage("q0", "Grain is stored dry in sealed silos.", "Storage")]
    model.set_corpus(other, torch.nn.functional.normalize(torch.randn(1, 32), dim=-1))
    assert model.retrieve(["Zorblat dose?"])[1].tolist() == [[0]]
    model.restore_corpus(kept)
    assert model.passages is kept.passages and model.passage_embeddings is kept.embeddings
    assert torch.equal(model.retrieve(["Zorblat dose?", "Tessaly lease?"])[1], before)

    model.config.retriever = "bm25"
    with pytest.raises(ValueError, match="another retriever"):
        model.restore_corpus(kept)
    model.set_corpus(PASSAGES, None)
    sparse = model.corpus_state()
    model.set_corpus(other, None)
    model.restore_corpus(sparse)
    assert model.retrieve(["Tessaly lease termination clause"], k=1)[1].tolist() == [[3]]


def test_demos_while_puts_the_demos_back_even_on_error(model):
    from metarag.data.schema import QAExample

    first = QAExample("e1", "How much Zorblat?", ("250 mg",), ("p0",))
    second = QAExample("e2", "When did the Quillon bridge open?", ("3 May 1911",), ("p1",))
    outer = model.use_demos([first])
    with model.demos_while([second]) as inner:
        assert model.demos == inner and inner[0].answer == "3 May 1911"
        assert inner[0].context.endswith("1911.")  # its gold passage
    assert model.demos == outer
    with pytest.raises(RuntimeError), model.demos_while([]):
        assert model.demos == ()
        raise RuntimeError
    assert model.demos == outer

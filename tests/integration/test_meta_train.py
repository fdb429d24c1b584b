"""Meta-training and adaptation end to end on tiny real models: every algorithm, files,
exact resume, non-finite losses, and an adaptation that leaves its starting model alone."""

import json

import pytest
import torch

from helpers import ADAPTED, TINY_KINDS, tiny_model
from metarag.checkpoint import latest_checkpoint, load_checkpoint
from metarag.data.synthetic import synthetic_suite
from metarag.meta.adapt import (
    AdaptConfig,
    adapt,
    adapt_params,
    adapted_names,
    support_batches,
    swapped_params,
)
from metarag.meta.train import (
    LEARNED_LR_PREFIX,
    MetaOptimConfig,
    MetaTrainConfig,
    learned_inner_lrs,
    meta_train,
)
from metarag.rag.build import ModelConfig, build_model, load_trained
from metarag.rag.model import RAGConfig
from metarag.train import DataConfig, TrainingError


@pytest.fixture(scope="module")
def tasks():
    return synthetic_suite(seed=0, n_entities=12, questions_per_entity=4,
                           domains=["pharmacy", "legal", "finance"])


def _config(out, encoder_dir, algorithm="fomaml", inner_lr=1e-2, kind="bert2bert",
            **meta) -> MetaTrainConfig:
    from metarag.config import from_dict

    model = from_dict(ModelConfig, tiny_model(kind, encoder=str(encoder_dir),
                                              max_source_length=48, max_target_length=12))
    model.rag = RAGConfig(k=2)
    return MetaTrainConfig(
        out=str(out), seed=0, eval_every=2, checkpoint_every=2, log_every=1,
        cache_dir=str(out.parent / "cache"), tensorboard=False,
        data=DataConfig(), model=model,
        inner=AdaptConfig(steps=1, lr=inner_lr, params=ADAPTED[kind], batch_size=None),
        meta=MetaOptimConfig(**{"algorithm": algorithm, "steps": 4, "meta_batch": 2,
                                "n_shot": 2, "n_query": 2, "outer_lr": 1e-3,
                                "warmup_steps": 1, **meta}))


@pytest.mark.parametrize("kind", TINY_KINDS)
@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "reptile", "meta_sgd"])
def test_each_algorithm_moves_only_the_meta_parameters(tmp_path, tiny_encoder_dir, tasks,
                                                       algorithm, kind):
    cfg = _config(tmp_path / algorithm, tiny_encoder_dir, algorithm, kind=kind)
    result = meta_train(cfg, tasks=tasks, show_progress=False)
    assert result.step == 4 and result.skipped_steps == []
    model = build_model(cfg.model, seed=0).model
    trained = load_checkpoint(tmp_path / algorithm).model
    meta_names = set(adapted_names(model, cfg.inner))
    # A small checkpoint: the meta-parameters (and Meta-SGD's rates), not the frozen base.
    assert {k for k in trained if not k.startswith(LEARNED_LR_PREFIX)} == meta_names
    own = dict(model.named_parameters())
    moved = {k for k in meta_names if not torch.equal(own[k], trained[k])}
    assert moved
    assert not any(k.startswith("query_model.") or "word_embeddings" in k for k in moved)
    rates = learned_inner_lrs(trained)
    if algorithm == "meta_sgd":  # learned rates are saved and have moved off their init
        assert rates and any(not torch.allclose(v, torch.full_like(v, 1e-2))
                             for v in rates.values())
    else:
        assert rates == {}
    assert {"loss_before", "loss_after"} <= set(result.validation)


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_a_run_writes_its_folder_and_refuses_to_overwrite(tmp_path, tiny_encoder_dir, tasks,
                                                          kind):
    cfg = _config(tmp_path / "run", tiny_encoder_dir, kind=kind)
    meta_train(cfg, tasks=tasks, show_progress=False)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "query_loss" in r] == [1, 2, 3, 4]
    assert any("val/loss_after" in r for r in log)
    state = load_checkpoint(run).state
    assert state["kind"] == "meta-train" and state["sampler"]["batches_drawn"] == 4
    # A meta-trained checkpoint loads like any other (Meta-SGD's extra tensors aside).
    built, _ = load_trained(str(run))
    assert built.model.config.k == 2
    with pytest.raises(TrainingError, match="already holds a run"):
        meta_train(cfg, tasks=tasks, show_progress=False)


@pytest.mark.parametrize(("algorithm", "kind"), [("maml", "bert2bert"), ("meta_sgd", "bert2bert"),
                                                  ("maml", "causal")])
def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_encoder_dir, tasks, algorithm,
                                              kind):
    meta_train(_config(tmp_path / "straight", tiny_encoder_dir, algorithm, kind=kind),
               tasks=tasks, show_progress=False)
    cfg = _config(tmp_path / "killed", tiny_encoder_dir, algorithm, kind=kind)
    meta_train(cfg, tasks=tasks, stop_after=2, show_progress=False)  # "killed" after step 2
    assert latest_checkpoint(tmp_path / "killed").name == "step-000002"
    meta_train(cfg, tasks=tasks, resume=True, show_progress=False)
    straight = load_checkpoint(tmp_path / "straight").model
    resumed = load_checkpoint(tmp_path / "killed").model
    assert straight.keys() == resumed.keys()
    for name, weight in straight.items():
        torch.testing.assert_close(resumed[name], weight, rtol=0, atol=0, msg=name)
    if algorithm == "meta_sgd":
        assert any(k.startswith(LEARNED_LR_PREFIX) for k in straight)


def test_non_finite_losses_stop_the_run_naming_the_checkpoint(tmp_path, tiny_encoder_dir,
                                                              tasks):
    # An absurd inner rate makes the query loss blow up after the first inner step.
    cfg = _config(tmp_path / "nan", tiny_encoder_dir, inner_lr=1e38)
    cfg.max_bad_steps = 3
    with pytest.raises(TrainingError, match="not finite .* Last good checkpoint: none"):
        meta_train(cfg, tasks=tasks, show_progress=False)
    log = [json.loads(line) for line in (tmp_path / "nan" / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log] == ["skipped"] * cfg.max_bad_steps


def test_adapt_returns_a_new_model_and_leaves_the_init_untouched(tiny_encoder_dir, tasks):
    built = build_model(ModelConfig(encoder=str(tiny_encoder_dir), generator="tiny",
                                    max_source_length=48, max_target_length=12,
                                    rag=RAGConfig(k=2)))
    task = tasks[0]
    built.use_corpus(task.corpus)
    before = {k: v.clone() for k, v in built.model.state_dict().items()}
    support = task.train[:4]
    questions, answers = [e.question for e in support], [e.answers[0] for e in support]
    with torch.no_grad():
        loss_before = built.model.eval()(questions, answers).loss.item()

    adapted = adapt(built, support, task.corpus, steps=5, lr=5e-2, params=["decoder"])

    for k, v in built.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)
    with torch.no_grad():
        loss_after = adapted.model(questions, answers).loss.item()
    assert loss_after < loss_before
    assert not adapted.model.training and adapted.passage_encoder is built.passage_encoder
    assert adapted.model.answer(questions[:1])[0].citations  # it answers, with its passages


def test_adapt_params_and_swap_agree_with_adapt(tiny_encoder_dir, tasks):
    built = build_model(ModelConfig(encoder=str(tiny_encoder_dir), generator="tiny",
                                    max_source_length=48, max_target_length=12,
                                    rag=RAGConfig(k=2)))
    task = tasks[1]
    built.use_corpus(task.corpus)
    config = AdaptConfig(steps=3, lr=5e-2, params=["decoder", "query_encoder"], batch_size=2)
    params = adapt_params(built.model, task.train[:4], config)
    copy = adapt(built, task.train[:4], config=config)
    own = dict(copy.model.named_parameters())
    for k, v in params.items():
        torch.testing.assert_close(own[k], v, rtol=0, atol=0, msg=k)
    original = {k: v.clone() for k, v in built.model.state_dict().items()}
    with swapped_params(built.model, params) as model:
        assert torch.equal(dict(model.named_parameters())[next(iter(params))],
                           next(iter(params.values())))
    for k, v in built.model.state_dict().items():
        torch.testing.assert_close(v, original[k], rtol=0, atol=0, msg=k)


def test_support_batches_cycle_in_order(tasks):
    support = tasks[0].train[:5]
    batches = support_batches(support, steps=3, batch_size=2)
    ids = {e.question: e.id for e in support}
    assert [[ids[q] for q in b.questions] for b in batches] == [
        [support[0].id, support[1].id], [support[2].id, support[3].id],
        [support[4].id, support[0].id]]
    assert len(support_batches(support, steps=2, batch_size=None)[0]) == 5
    with pytest.raises(ValueError, match="at least one support example"):
        support_batches([], steps=1, batch_size=2)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="meta.algorithm must be one of"):
        MetaOptimConfig(algorithm="protonet")
    with pytest.raises(ValueError, match="adapt.steps"):
        AdaptConfig(steps=-1)


def test_adapt_with_learned_rates_matches_the_scalar_rule(tiny_encoder_dir, tasks):
    """Meta-SGD's rates replace the scalar: constant rates equal it, zero rates move nothing."""
    built = build_model(ModelConfig(encoder=str(tiny_encoder_dir), generator="tiny",
                                    max_source_length=48, max_target_length=12,
                                    rag=RAGConfig(k=2)))
    built.use_corpus(tasks[0].corpus)
    config = AdaptConfig(steps=2, lr=5e-2, params=["decoder"], batch_size=None)
    names = adapted_names(built.model, config)
    own = dict(built.model.named_parameters())
    support = tasks[0].train[:3]
    scalar = adapt_params(built.model, support, config)
    constant = adapt_params(built.model, support, config, learned_lrs={
        k: torch.full_like(own[k], 5e-2) for k in names})
    frozen = adapt_params(built.model, support, config, learned_lrs={
        k: torch.zeros_like(own[k]) for k in names})
    for k in names:
        torch.testing.assert_close(constant[k], scalar[k], rtol=1e-5, atol=1e-7, msg=k)
        torch.testing.assert_close(frozen[k], own[k].detach(), rtol=0, atol=0, msg=k)


def test_in_context_adaptation_adapts_and_answers_with_the_support_set(tiny_encoder_dir, tasks):
    """`AdaptConfig.in_context`: other adapted weights than without demos, and the adapted
    model keeps the support set as its demos; the starting model keeps none."""
    from metarag.config import from_dict

    built = build_model(from_dict(ModelConfig, tiny_model(
        "causal", encoder=str(tiny_encoder_dir), max_source_length=512, max_target_length=12)))
    task = tasks[2]
    built.use_corpus(task.corpus)
    support = task.train[:4]
    config = AdaptConfig(steps=2, lr=5e-2, params=ADAPTED["causal"], batch_size=2)
    plain = adapt_params(built.model, support, config)
    config.in_context = True
    in_context = adapt_params(built.model, support, config)
    assert built.model.demos == ()
    assert any(not torch.allclose(plain[k], in_context[k]) for k in plain)
    adapted = adapt(built, support, config=config)
    assert [d.question for d in adapted.model.demos] == [e.question for e in support]
    assert built.model.demos == ()
    # in_context=False means no demos, also for a model that carries some.
    config.in_context = False
    again = adapt_params(adapted.model, support, config)
    assert adapt(adapted, support, config=config).model.demos == ()
    with adapted.model.demos_while(()):
        expected = adapt_params(adapted.model, support, config)
    assert all(torch.equal(again[k], expected[k]) for k in again)


def test_meta_training_over_in_context_episodes_learns_otherwise(tmp_path, tiny_encoder_dir,
                                                                 tasks):
    """``inner.in_context``: the support set in every prompt of an episode changes what is
    learned; the run folder records it for `metarag adapt` to adapt the same way."""
    plain = _config(tmp_path / "plain", tiny_encoder_dir, kind="causal")
    icl = _config(tmp_path / "icl", tiny_encoder_dir, kind="causal")
    icl.inner.in_context = True
    for cfg in (plain, icl):
        cfg.model.max_source_length = 512
        meta_train(cfg, tasks=tasks, show_progress=False)
    a, b = (load_checkpoint(tmp_path / name) for name in ("plain", "icl"))
    assert any(not torch.equal(a.model[k], b.model[k]) for k in a.model)
    assert b.state["config"]["inner"]["in_context"] is True

"""Answer metrics: hand-computed values, parity with the reference libraries, Chinese."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from metarag.evaluation import metrics as M
from metarag.evaluation.metrics import (
    bleu,
    character_tokens,
    exact_match,
    meteor,
    normalize_answer,
    rouge,
    score_answers,
    sentence_bleu,
    token_f1,
)

# Mixed pairs for parity checks against the libraries themselves.
PREDICTIONS = [
    "The cat sat on the mat.",
    "Insulin is made in the pancreas",
    "in 1998",
    "large amounts of water",
]
REFERENCES = [
    ["A cat was sitting on the mat.", "The cat sat on a mat."],
    ["The pancreas produces insulin."],
    ["1998", "in the year 1998"],
    ["big quantities of water"],
]


@pytest.fixture(scope="module")
def english_wordnet() -> None:
    """WordNet for English METEOR; skip (with the fix) when it cannot be set up."""
    from metarag.evaluation.wordnet import WordNetUnavailableError, ensure_wordnet

    try:
        ensure_wordnet()
    except WordNetUnavailableError as err:
        pytest.skip(f"WordNet unavailable: {err}")


# ------------------------------------------------------------------- EM / F1


def test_normalize_answer_follows_squad() -> None:
    # Lower case, ASCII punctuation out, articles a/an/the out, whitespace collapsed.
    assert normalize_answer("The  Cat's, a  HAT!") == ["cats", "hat"]
    assert normalize_answer("theatre an") == ["theatre"]  # "the" only as a whole word


def test_token_f1_by_hand() -> None:
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]; 2 common.
    # P = 2/2 = 1, R = 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = (4/3) / (5/3) = 0.8
    assert token_f1(["the cat sat"], [["a cat sat down"]]) == pytest.approx(80.0)
    # Bag of tokens, clipped counts: [cat, cat] vs [cat]: common 1, P = 1/2, R = 1, F1 = 2/3.
    assert token_f1(["cat cat"], [["cat"]]) == pytest.approx(100 * 2 / 3)
    assert token_f1(["dog"], [["cat"]]) == 0.0


def test_exact_match_by_hand() -> None:
    # "The Cat!" and "cat" both normalise to [cat]; "cats" does not.
    assert exact_match(["The Cat!", "cats"], [["cat"], ["cat"]]) == pytest.approx(50.0)


def test_em_and_f1_take_the_best_reference() -> None:
    # EM: the second reference normalises to [paris, france] like the prediction.
    assert exact_match(["Paris France"], [["France", "Paris, France"]]) == 100.0
    # F1 vs "Paris": P = 1/2, R = 1 -> 2/3; vs "Lyon France": P = R = 1/2 -> 1/2. Max 2/3.
    assert token_f1(["Paris France"], [["Paris", "Lyon France"]]) == pytest.approx(100 * 2 / 3)


def test_empty_answers() -> None:
    # Both empty after normalisation ("The." -> []): they agree (SQuAD v2.0's rule).
    assert token_f1(["The."], [[""]]) == 100.0
    assert token_f1([""], [["cat"]]) == 0.0


# ---------------------------------------------------------------------- BLEU


def test_bleu_by_hand() -> None:
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat", 6 tokens each (BP = 1).
    # 1-grams: the (clipped to 1), cat, sat, on, mat = 5/6
    # 2-grams: the cat, cat sat, sat on = 3/5;  3-grams: the cat sat, cat sat on = 2/4
    # 4-grams: the cat sat on = 1/3.  BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** 0.25
    expected = 100 * (1 / 12) ** 0.25  # = 53.73
    assert bleu(["the cat sat on the mat"], [["the cat sat on a mat"]]) == pytest.approx(expected)
    assert bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(100)


def test_bleu_matches_sacrebleu_with_padded_references() -> None:
    import sacrebleu

    # Example 2 has one reference; sacrebleu takes None for the missing one.
    streams = [[r[0] for r in REFERENCES],
               [r[1] if len(r) > 1 else None for r in REFERENCES]]
    expected = sacrebleu.corpus_bleu(PREDICTIONS, streams).score
    assert bleu(PREDICTIONS, REFERENCES) == pytest.approx(expected)
    # A second reference can only add matches.
    first_only = [[r[0]] for r in REFERENCES]
    assert bleu(PREDICTIONS, REFERENCES) >= bleu(PREDICTIONS, first_only)


def test_sentence_bleu_matches_sacrebleu() -> None:
    import sacrebleu

    expected = [sacrebleu.sentence_bleu(p, r).score for p, r in zip(PREDICTIONS, REFERENCES)]
    assert sentence_bleu(PREDICTIONS, REFERENCES) == pytest.approx(expected)


def test_bleu_chinese_by_hand_and_sacrebleu() -> None:
    import sacrebleu

    preds, refs = ["北京大学", "是的"], [["北京市", "北京大学"], ["不是"]]
    # Characters, all references pooled; hyp lengths 4 and 2 have refs of equal length (BP 1).
    # 1-grams: 4/4 + 是 1/2 = 5/6;  2-grams: 3/3 + 0/1 = 3/4;  3-grams 2/2;  4-grams 1/1.
    expected = 100 * (5 / 6 * 3 / 4) ** 0.25  # = 88.91
    assert bleu(preds, refs, language="zh") == pytest.approx(expected)
    lib = sacrebleu.corpus_bleu(preds, [["北京市", "不是"], ["北京大学", None]], tokenize="zh")
    assert bleu(preds, refs, language="zh") == pytest.approx(lib.score)
    # Japanese: the same character tokens (kana too), here identical.
    assert bleu(preds, refs, language="ja") == pytest.approx(expected)


# --------------------------------------------------------------------- ROUGE


def test_rouge_by_hand() -> None:
    # rouge-score keeps articles: [the, cat, sat] vs [a, cat, sat, down].
    # ROUGE-1: 2 common, P = 2/3, R = 2/4, F = 2 * (1/3) / (7/6) = 4/7
    # ROUGE-2: {the cat, cat sat} vs {a cat, cat sat, sat down}: 1 common,
    #          P = 1/2, R = 1/3, F = 2 * (1/6) / (5/6) = 0.4
    # ROUGE-L: LCS "cat sat" = 2, so as ROUGE-1: 4/7
    got = rouge(["the cat sat"], [["a cat sat down"]])
    assert got == pytest.approx({"rouge1": 400 / 7, "rouge2": 40.0, "rougeL": 400 / 7})


def test_rouge_matches_rouge_score_max_over_references() -> None:
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    got = rouge(PREDICTIONS, REFERENCES)
    for kind in ("rouge1", "rouge2", "rougeL"):
        best = [max(scorer.score(r, p)[kind].fmeasure for r in refs)
                for p, refs in zip(PREDICTIONS, REFERENCES)]
        assert got[kind] == pytest.approx(100 * sum(best) / len(best))


def test_rouge_uses_the_stemmer_for_english() -> None:
    # "sitting" and "sits" both stem to "sit" (Porter), so ROUGE-1 is perfect.
    assert rouge(["cats sitting"], [["cat sits"]])["rouge1"] == pytest.approx(100.0)


def test_rouge_chinese_by_characters() -> None:
    from rouge_score.rouge_scorer import RougeScorer

    pred, ref = "北京大学", "北京市"
    # rouge-score's default tokeniser deletes non-ASCII text: every Chinese pair scores 0.
    assert RougeScorer(["rouge1"]).score(ref, pred)["rouge1"].fmeasure == 0.0
    # By characters: ROUGE-1: 北 京 common, P = 2/4, R = 2/3, F = (2/3) / (7/6) = 4/7
    # ROUGE-2: {北京, 京大, 大学} vs {北京, 京市}: P = 1/3, R = 1/2, F = (1/3) / (5/6) = 0.4
    # ROUGE-L: LCS 北京 = 2 -> 4/7
    got = rouge([pred], [[ref]], language="zh")
    assert got == pytest.approx({"rouge1": 400 / 7, "rouge2": 40.0, "rougeL": 400 / 7})


# -------------------------------------------------------------------- METEOR


def test_meteor_by_hand(english_wordnet: None) -> None:
    # Identical 3 tokens: P = R = 1, so Fmean = 1; 1 chunk over 3 matches,
    # penalty = 0.5 * (1/3) ** 3 = 1/54, METEOR = 1 - 1/54 = 53/54.
    assert meteor(["the cat sat"], [["the cat sat"]]) == pytest.approx(100 * 53 / 54)
    # [the, red, house] vs [the, large, house]: 2 matches, P = R = 2/3, Fmean = 2/3;
    # "the" and "house" are 2 chunks, penalty = 0.5 * (2/2) ** 3 = 0.5 -> 1/3.
    assert meteor(["the red house"], [["the large house"]]) == pytest.approx(100 / 3)


def test_meteor_uses_wordnet_synonyms(english_wordnet: None) -> None:
    # car/auto share the synset car.n.01, so all 3 words match: 53/54, as if identical.
    synonym = meteor(["the auto stopped"], [["the car stopped"]])
    assert synonym == pytest.approx(100 * 53 / 54)
    # "bus" is no synonym: 2 matches in 2 chunks, 1/3 as worked out above.
    assert meteor(["the bus stopped"], [["the car stopped"]]) == pytest.approx(100 / 3)
    # NLTK looks synonyms up after Porter stemming, so words the stemmer changes
    # miss their synonyms (large -> "larg"): big/large does not match. Kept for
    # parity with nltk.translate.meteor_score.
    assert meteor(["the big house"], [["the large house"]]) == pytest.approx(100 / 3)


def test_meteor_matches_nltk(english_wordnet: None) -> None:
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import meteor_score

    tokens = M._WORD_TOKEN.findall
    expected = [meteor_score([tokens(r) for r in refs], tokens(p), wordnet=wordnet)
                for p, refs in zip(PREDICTIONS, REFERENCES)]
    assert meteor(PREDICTIONS, REFERENCES) == pytest.approx(100 * sum(expected) / len(expected))
    # Max over references: each example scores its best single reference.
    for p, refs in zip(PREDICTIONS, REFERENCES):
        singles = [meteor([p], [[r]]) for r in refs]
        assert meteor([p], [refs]) == pytest.approx(max(singles))


def test_meteor_chinese_by_characters_without_wordnet(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chinese must not touch WordNet: make any attempt fail loudly.
    def no_wordnet() -> None:
        raise AssertionError("Chinese METEOR asked for WordNet")

    monkeypatch.setattr(M, "_english_wordnet", no_wordnet)
    # 北京大学 vs 北京市: 2 matches, P = 1/2, R = 2/3,
    # Fmean = P*R / (0.9 P + 0.1 R) = (1/3) / (0.45 + 1/15) = (1/3) / (31/60) = 20/31;
    # 1 chunk / 2 matches: penalty = 0.5 * (1/2) ** 3 = 1/16 -> 20/31 * 15/16 = 75/124.
    assert meteor(["北京大学"], [["北京市"]], language="zh") == pytest.approx(100 * 75 / 124)


# ------------------------------------------------------------------- Chinese


def test_character_tokens_keep_ascii_words() -> None:
    assert character_tokens("用BERT模型, 2024年") == ["用", "BERT", "模", "型", ",", "2024", "年"]


def test_chinese_f1_by_hand() -> None:
    # [北, 京, 大, 学] vs [北, 京, 市]: 2 common, P = 2/4, R = 2/3,
    # F1 = 2 * (1/2)(2/3) / (1/2 + 2/3) = (2/3) / (7/6) = 4/7.
    assert token_f1(["北京大学"], [["北京市"]], language="zh") == pytest.approx(400 / 7)
    # English normalisation sees one word each, which differ: 0.
    assert token_f1(["北京大学"], [["北京市"]], language="en") == 0.0
    # Punctuation (Chinese and ASCII) is dropped, case folded: [用, bert, 模, 型] vs
    # [bert, 模, 型]: P = 3/4, R = 1, F1 = (3/2) / (7/4) = 6/7.
    assert token_f1(["用BERT模型。"], [["bert模型"]], language="zh") == pytest.approx(600 / 7)
    assert exact_match(["北京。"], [["北京"]], language="zh") == 100.0


# ---------------------------------------------------------------- everything


def test_score_answers_keys_and_scale(english_wordnet: None) -> None:
    got = score_answers(PREDICTIONS, REFERENCES)
    assert list(got) == ["exact_match", "f1", "bleu", "rouge1", "rouge2", "rougeL", "meteor"]
    assert all(0.0 <= v <= 100.0 and not math.isnan(v) for v in got.values())
    assert got["f1"] == pytest.approx(token_f1(PREDICTIONS, REFERENCES))
    perfect = score_answers(["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert perfect["exact_match"] == perfect["f1"] == 100.0
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rougeL"] == pytest.approx(100.0)


def test_score_answers_chinese() -> None:
    got = score_answers(["北京大学", "是的"], [["北京市", "北京大学"], ["不是"]], language="zh")
    # Example 1 matches its second reference exactly; example 2 ([是, 的] vs [不, 是]):
    # F1 = 1/2, so EM = 50 and F1 = (1 + 1/2) / 2 = 75.
    assert got["exact_match"] == 50.0
    assert got["f1"] == pytest.approx(75.0)
    assert got["rouge1"] > 0 and got["meteor"] > 0


# -------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [exact_match, token_f1, bleu, sentence_bleu, rouge, meteor,
                                score_answers])
def test_bad_inputs_raise(fn: Callable[..., object]) -> None:
    with pytest.raises(ValueError, match="language='fr' is not supported.*en, zh, ja"):
        fn(["a"], [["a"]], language="fr")
    with pytest.raises(ValueError, match="predictions is empty"):
        fn([], [])
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        fn(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match=r"references\[0\] is a string"):
        fn(["a"], ["a"])
    with pytest.raises(ValueError, match=r"references\[0\] is empty"):
        fn(["a"], [[]])

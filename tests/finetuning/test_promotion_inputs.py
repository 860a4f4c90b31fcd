"""Champion / challenger decisions on hostile inputs: ties within float noise, NaN or
missing validation values, wrong types for the margin, the direction or the values."""

from __future__ import annotations

import pytest

from llama_index_ragtune.finetuning.promotion import decide_promotion


def test_equal_scores_up_to_float_noise_are_a_tie_not_a_promotion():
    # 0.1 + 0.2 == 0.30000000000000004: a "gain" of 5.6e-17 with margin 0 promoted
    tie = decide_promotion({"m": 0.3}, {"m": 0.1 + 0.2}, "m", margin=0.0)
    assert not tie.promoted and "not better" in tie.reason
    loss_tie = decide_promotion({"loss": 0.1 + 0.2}, {"loss": 0.3}, "loss", 0.0, False)
    assert not loss_tie.promoted
    # better by exactly the margin is not "more than" it (0.305 - 0.3 = 0.0050000000000000044)
    assert not decide_promotion({"m": 0.300}, {"m": 0.305}, "m", margin=0.005).promoted
    assert decide_promotion({"m": 0.300}, {"m": 0.306}, "m", margin=0.005).promoted
    assert decide_promotion({"m": 0.3}, {"m": 0.3 + 1e-9}, "m", margin=0.0).promoted


def test_a_nan_or_missing_value_is_named_in_the_reason():
    nan = decide_promotion({"ndcg@10": 0.5}, {"ndcg@10": float("nan")}, "ndcg@10")
    assert not nan.promoted and nan.gain is None
    assert "the tuned model's ndcg@10 is nan" in nan.reason  # said "no validation ... for both"
    typo = decide_promotion({"ndcg@10": 0.5}, {"ndcg10": 0.9}, "ndcg@10")
    assert not typo.promoted and "the tuned model has no ndcg@10 (it has ['ndcg10'])" in typo.reason
    undefined = decide_promotion({"auc": None}, {"auc": 0.9}, "auc")  # was float(None)
    assert not undefined.promoted and "auc is undefined" in undefined.reason
    assert "could not be checked" in undefined.reason


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"margin": "0.01"}, "margin"),  # was "'<' not supported between str and int"
        ({"margin": True}, "margin"),  # was a margin of 1
        ({"greater_is_better": "False"}, "greater_is_better"),  # truthy: a loss maximised
        ({"greater_is_better": None}, "greater_is_better"),
    ],
)
def test_wrong_argument_types_are_type_errors_naming_them(kwargs, match):
    with pytest.raises(TypeError, match=match):
        decide_promotion({"loss": 2.0}, {"loss": 1.0}, "loss", **kwargs)


@pytest.mark.parametrize("value", ["0.6", True, [0.6]])
def test_a_metric_value_that_is_not_a_number_names_the_side(value):
    with pytest.raises(TypeError, match=r"challenger\['m'\]"):
        decide_promotion({"m": 0.5}, {"m": value}, "m")  # "0.6" was compared as 0.6


def test_an_overflowing_gain_is_none_and_numpy_values_work():
    np = pytest.importorskip("numpy")
    huge = decide_promotion({"m": -1e308}, {"m": 1e308}, "m")
    assert huge.promoted and huge.gain is None  # was inf
    won = decide_promotion({"m": np.float32(0.5)}, {"m": np.float64(0.6)}, "m")
    assert won.promoted and won.gain == pytest.approx(0.1, abs=1e-6)

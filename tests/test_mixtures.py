import json

import numpy as np
import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.mixtures import MixtureContext, check_epochs, compute_mixture, language_weights, parse_ratios, validate_ratios
from nemo_mlsl.registry import MIXTURES

TOK = {"a": 100, "b": 300, "c": 600}


def test_builtins_are_registered_through_entry_points():
    assert {"explicit", "natural", "uniform", "temperature", "unimax", "from_fit"} <= set(MIXTURES.names())


def test_natural_uniform_temperature():
    ctx = MixtureContext(TOK)
    assert compute_mixture("natural", ctx) == pytest.approx({"a": 0.1, "b": 0.3, "c": 0.6})
    assert compute_mixture("uniform", ctx) == pytest.approx({k: 1 / 3 for k in TOK})
    assert compute_mixture("temperature:1", ctx) == pytest.approx(compute_mixture("natural", ctx))
    t2 = compute_mixture("temperature:2", ctx)
    z = sum(np.sqrt(list(TOK.values())))
    assert t2 == pytest.approx({k: np.sqrt(v) / z for k, v in TOK.items()})
    assert compute_mixture("temperature:1e9", ctx) == pytest.approx(compute_mixture("uniform", ctx), abs=1e-6)


def test_unimax_matches_hand_computed_cases_with_unsorted_input():
    # budget 900, cap 1 epoch: a (100) capped at 100; remaining 800 split over b, c -> 400 each; b capped at 300; c gets 500.
    ctx = MixtureContext({"c": 600, "a": 100, "b": 300}, budget=900)
    assert compute_mixture("unimax:1", ctx) == pytest.approx({"a": 100 / 900, "b": 300 / 900, "c": 500 / 900})
    # 2 epochs: a gets 200, then 350 each for b (cap 600) and c.
    assert compute_mixture("unimax:2", ctx) == pytest.approx({"a": 200 / 900, "b": 350 / 900, "c": 350 / 900})
    with pytest.raises(ConfigError, match="cannot spend the budget"):
        compute_mixture("unimax:1", MixtureContext(TOK, budget=5000))
    with pytest.raises(ConfigError, match="budget"):
        compute_mixture("unimax:1", MixtureContext(TOK))


def test_from_fit(tmp_path):
    path = tmp_path / "opt.json"
    path.write_text(json.dumps({"ratios": {"a": 0.2, "b": 0.3, "c": 0.5}}))
    assert compute_mixture(f"from_fit:{path}", MixtureContext(TOK)) == pytest.approx({"a": 0.2, "b": 0.3, "c": 0.5})
    with pytest.raises(ConfigError, match="does not exist"):
        compute_mixture(f"from_fit:{tmp_path}/none.json", MixtureContext(TOK))


def test_ratios_must_sum_to_one_unless_normalized():
    with pytest.raises(ConfigError) as err:
        validate_ratios({"a": 0.5, "b": 0.4}, TOK)
    assert "sum to 0.9" in str(err.value) and "--normalize" in str(err.value)
    assert validate_ratios({"a": 0.5, "b": 0.4}, TOK, normalize=True)["a"] == pytest.approx(0.5 / 0.9)
    assert validate_ratios({"a": 0.5, "b": 0.5 + 5e-7}, TOK)["c"] == 0.0


@pytest.mark.parametrize("ratios,match", [
    ({"a": 0.5, "zz": 0.5}, "unknown family 'zz'"),
    ({"a": -0.1, "b": 1.1}, "must be finite and >= 0"),
    ({"a": float("nan"), "b": 1.0}, "must be finite"),
])
def test_bad_ratios(ratios, match):
    with pytest.raises(ConfigError, match=match):
        validate_ratios(ratios, TOK)


def test_ratio_on_family_without_data():
    with pytest.raises(ConfigError, match="'d' has ratio > 0 but no training tokens"):
        validate_ratios({"a": 0.5, "d": 0.5}, {**TOK, "d": 0})


def test_epoch_cap_error_reports_family_tokens_and_epochs():
    with pytest.raises(ConfigError) as err:
        check_epochs({"a": 0.5, "c": 0.5}, TOK, budget=1000, max_epochs=4)
    msg = str(err.value)
    assert "'a'" in msg and "5.00 times" in msg and "100 available" in msg and "4 epochs" in msg
    assert check_epochs({"a": 0.2, "c": 0.8}, TOK, 1000, 4) == pytest.approx({"a": 2.0, "c": 800 / 600})


def test_language_weights_multiply_family_ratio_by_within_share():
    fams = {"f": {"x": 100, "y": 300}, "g": {"z": 50}}
    w = language_weights({"f": 0.6, "g": 0.4}, fams, "natural")
    assert w == pytest.approx({"x": 0.15, "y": 0.45, "z": 0.4})
    assert language_weights({"f": 0.6, "g": 0.4}, fams, "uniform") == pytest.approx({"x": 0.3, "y": 0.3, "z": 0.4})


def test_parse_ratios_errors():
    assert parse_ratios("a=0.25, b=0.75") == {"a": 0.25, "b": 0.75}
    with pytest.raises(ConfigError, match="family=ratio"):
        parse_ratios("a0.5")
    with pytest.raises(ConfigError, match="not a number"):
        parse_ratios("a=x")

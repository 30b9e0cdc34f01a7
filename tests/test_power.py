"""Power of the confirmation: the report's test simulated whole (σ from the paired differences, pooled over
baselines that share the optimum's run) against its stated level and power, the closed forms against known values,
and whole studies on planted laws (a stand-in backend writes the records a planted joint law gives, with a seed
effect shared by paired runs) whose verdicts must match the planted truth."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.results import ResultsStore
from nemo_mlsl.study import power
from nemo_mlsl.study.config import load_study

Z95 = 1.959963984540054
SIMULATIONS = 20_000  # per case: binomial sd 0.28% at a power of 0.8, 0.15% at a level of 0.0455


# --- the report's test, simulated whole ---------------------------------------------------------------------------

def simulate_differences(rng, gain: float, sd: float, seeds: int, baselines: int, studies: int) -> np.ndarray:
    """Paired differences [study, baseline, seed] of confirmations whose runs have a seed effect shared by every
    mixture of a seed (it cancels) and noise of their own; every baseline's difference of a seed shares the
    optimum's run of that seed. ``sd``: the noise of one difference."""
    shared = rng.normal(0, 0.05, size=(studies, 1, seeds))  # a seed's effect on every mixture: cancels
    runs = shared + rng.normal(0, sd / math.sqrt(2), size=(studies, baselines + 1, seeds))  # [:, 0]: the optimum
    return (gain + runs[:, 1:]) - runs[:, :1]


def _comp(diffs: np.ndarray) -> dict:
    """A report's ``comparison`` for one simulated study: totals per seed (optimum at 10), predicted gains of 0."""
    b, n = diffs.shape
    opt = {str(s): 10.0 for s in range(n)}
    comp = {"optimal": {"totals_by_seed": opt, "total_observed": 10.0, "total_predicted": 10.0}}
    for i in range(b):
        t = {str(s): 10.0 + float(diffs[i, s]) for s in range(n)}
        comp[f"b{i}"] = {"totals_by_seed": t, "total_observed": float(np.mean(list(t.values()))), "total_predicted": 10.0}
    return comp


@pytest.mark.parametrize("seeds,baselines", [(3, 1), (3, 3), (5, 1), (5, 3)])
def test_the_detectable_gain_is_called_beyond_noise_with_the_stated_power(seeds, baselines, record_property):
    """Whole confirmations simulated through the report's own test (``power.confirm``, which ``_gains`` calls; the
    two are checked to agree on the first studies): a true gain equal to the planned detectable gain is called
    "optimal better, beyond noise" in 80% of studies, and a gain of 0 is called beyond noise at the 2σ level."""
    from nemo_mlsl.study.report import _gains

    sd = 0.02
    rng = np.random.default_rng(1000 * seeds + baselines)
    g = power.detectable_gain(sd, seeds, baselines)
    d = simulate_differences(rng, g, sd, seeds, baselines, SIMULATIONS)
    test = power.confirm(d)
    assert test.dof == baselines * (seeds - 1) and test.pooled == baselines
    calls = test.calls()
    hit = float(np.mean(calls[:, 0] == 1))
    for i in range(200):  # the report's _gains gives the very same verdicts
        got = _gains(_comp(d[i]), sigma=None)
        assert [got[f"b{j}"]["verdict"] for j in range(baselines)] == [power.VERDICTS[int(c)] for c in calls[i]]
        assert got["b0"]["detectable"] == pytest.approx(power.detectable_gain(test.sd[i, 0], seeds, baselines), rel=1e-12)
    null = power.confirm(simulate_differences(rng, 0.0, sd, seeds, baselines, SIMULATIONS)).calls()
    false = float(np.mean(null[:, 0] != 0))
    # what the previous definition, (2 + z_0.8)·sd/√n with a t threshold on B·(n−1) dof, detected
    old_g = (2 + stats.norm.ppf(0.8)) * sd / math.sqrt(seeds)
    d_old = simulate_differences(rng, old_g, sd, seeds, baselines, SIMULATIONS)
    old_k = stats.t.ppf(stats.norm.cdf(2), baselines * (seeds - 1))
    old = power.confirm(d_old)
    old_hit = float(np.mean(old.difference[:, 0] > old_k * old.se[:, 0]))
    record_property("figure: simulated studies per case", SIMULATIONS)
    record_property(f"figure: n={seeds} B={baselines} detectable gain / sd", round(g / sd, 4))
    record_property(f"figure: n={seeds} B={baselines} called beyond noise at the detectable gain", round(hit, 4))
    record_property(f"figure: n={seeds} B={baselines} called beyond noise at a gain of 0 (level 0.0455)", round(false, 4))
    record_property(f"figure: n={seeds} B={baselines} previous definition's gain called", round(old_hit, 4))
    assert hit == pytest.approx(power.POWER, abs=0.02)
    assert false == pytest.approx(1 - power.level(), abs=0.01)
    assert power.power_of(g, sd, seeds, baselines) == pytest.approx(power.POWER, abs=1e-9)


def test_the_quadrature_is_the_noncentral_t_for_one_baseline():
    """The law of the pooled noise estimate, integrated by quadrature, against the closed form where one exists."""
    for n in (2, 3, 5, 20):
        k = power.threshold(n)
        for delta in (0.0, 1.0, 3.0, 6.0):
            exact = stats.nct.sf(k, n - 1, delta) if delta else stats.t.sf(k, n - 1)
            assert power._prob_quadrature(delta, n, 1, k) == pytest.approx(exact, abs=2e-5)
    for n, b in ((3, 3), (5, 2), (10, 4)):  # E[s²] = sd²: the quadrature integrates the law's mean (its tails beyond the last node aside)
        s, w = power._noise_ratio(n, b)
        assert np.dot(w, s ** 2) == pytest.approx(1.0, abs=5e-4) and w.sum() == pytest.approx(1.0, abs=1e-12)


# --- closed forms -----------------------------------------------------------------------------------------------

def test_seeds_needed_matches_published_paired_t_sample_sizes():
    # two-sided paired t-test at 5%: effect size d = 0.5 needs 34 pairs for 80% power, d = 0.8 needs 15 (Cohen 1988; G*Power)
    assert power.seeds_needed(0.5, 1.0, 1, 0.8, z=Z95) == 34
    assert power.seeds_needed(0.8, 1.0, 1, 0.8, z=Z95) == 15
    assert power.seeds_needed(0.0, 1.0) is None and power.seeds_needed(-1.0, 1.0) is None and power.seeds_needed(None, 1.0) is None


@pytest.mark.parametrize("baselines", [1, 2, 3])
def test_detectable_gain_is_the_inverse_of_seeds_needed(baselines):
    sd = 0.03
    for n in (2, 3, 4, 9, 25):
        g = power.detectable_gain(sd, n, baselines)
        assert power.seeds_needed(g * 1.0001, sd, baselines) == n
        assert power.seeds_needed(g * 0.9999, sd, baselines) == n + 1
    # one seed: the noise is √2·σ taken as known, the threshold 2, the normal power
    assert power.detectable_gain(sd, 1, baselines) == pytest.approx((2 + 0.8416212335729143) * sd)
    assert power.seeds_needed(power.detectable_gain(sd, 1) * 1.0001, sd, baselines, one_seed=True) == 1


def test_threshold_is_two_sigma_with_known_noise_and_the_pooled_estimators_quantile_otherwise():
    assert power.threshold(1) == 2.0 and power.level() == pytest.approx(0.9545, abs=1e-4)
    assert power.threshold(3) == pytest.approx(stats.t.ppf(stats.norm.cdf(2), 2))  # one baseline: the paired t
    for n in (2, 3, 5):
        # three baselines: fewer effective dof than B·(n−1) (their differences share the optimum's run), more than n−1
        assert stats.t.ppf(stats.norm.cdf(2), 3 * (n - 1)) < power.threshold(n, 3) < stats.t.ppf(stats.norm.cdf(2), n - 1)
        assert 2 * power.prob_called(0.0, n, 3, power.threshold(n, 3)) == pytest.approx(1 - power.level(), abs=1e-9)
    assert power.threshold(2000, 3) == pytest.approx(2.0, abs=2e-3)


def test_confirm_pools_around_each_baselines_own_mean():
    d = np.array([[1.0, 3.0, np.nan], [10.0, 12.0, 14.0], [5.0, np.nan, np.nan]])
    t = power.confirm(d)
    assert t.dof == 3 and t.pooled == 2 and list(t.seeds) == [2, 3, 1]
    assert t.sd[0] == pytest.approx(math.sqrt((2 + 8) / 3)) and t.difference.tolist() == [2.0, 12.0, 5.0]
    one = power.confirm(np.array([[0.3], [0.1]]), fallback_sd=[0.1, 0.1])  # one seed: σ's noise, threshold 2
    assert one.dof == 0 and list(one.threshold) == [2.0, 2.0] and list(one.calls()) == [1, 0]
    assert power.confirm(np.array([[0.3]])).se is None and power.verdict(None) == "unknown (no seed repeats)"


def test_power_lines_never_say_detectable_while_needing_more_seeds():
    """One definition: detectable exactly when the planned seeds reach the power, and then seeds_needed <= seeds."""
    sd = power.unpaired_sd(0.015)
    for seeds in (1, 2, 3, 5, 8):
        for b in (1, 3):
            names = [f"b{i}" for i in range(b)]
            det = power.detectable_gain(sd, seeds, b)
            for g in np.linspace(0.2, 3.0, 15) * det:
                (p, *_) = power.power_lines({n: float(g) for n in names}, 0.015, "given", seeds, names)
                assert p.detectable == (p.seeds_needed is not None and p.seeds_needed <= seeds)
                assert p.detectable == (power.power_of(g, sd, seeds, b) >= power.POWER)
                if abs(g / det - 1) > 1e-6:
                    assert p.detectable == (g > det), (seeds, b, g, det, p)


def test_power_lines_say_when_a_predicted_gain_is_not_detectable():
    lines = power.power_lines({"uniform": 0.001, "natural": 0.05}, 0.015, "given", 3, ["uniform", "natural"])
    by = {p.baseline: p for p in lines}
    assert by["natural"].detectable and by["natural"].verdict == "detectable" and by["natural"].baselines == 2
    assert by["uniform"].detectable is False and "NOT detectable" in by["uniform"].verdict
    sd = power.unpaired_sd(0.015)
    assert by["uniform"].seeds_needed == power.seeds_needed(0.001, sd, 2) > 3
    assert by["natural"].detectable_gain == pytest.approx(power.detectable_gain(sd, 3, 2))


def _planted_comp(optimal: dict, **baselines: dict) -> dict:
    comp = {}
    for name, t in {"optimal": optimal, **baselines}.items():
        t = {str(k): v for k, v in t.items()}
        comp[name] = {"totals_by_seed": t, "total_observed": float(np.mean(list(t.values()))), "total_predicted": 4.0}
    return comp


def test_gains_on_planted_totals():
    """The report's _gains worked by hand. Three paired seeds, two baselines: differences a = (0.20, 0.23, 0.20) and
    b = (-0.09, -0.12, -0.06); pooled around each mean, SS = 0.0006 + 0.0018 on 4 dof, s = √0.0006 = 0.0244949,
    se = s/√3 = 0.0141421, k = threshold(3, 2)."""
    from nemo_mlsl.study.report import _gains

    g = _gains(_planted_comp({0: 4.00, 1: 4.02, 2: 3.98}, a={0: 4.20, 1: 4.25, 2: 4.18}, b={0: 3.91, 1: 3.90, 2: 3.92}), None)
    k = power.threshold(3, 2)
    assert 2.8 < k < 3.1
    for name, diff, verdict in (("a", 0.21, "optimal better, beyond noise"), ("b", -0.09, "baseline better, beyond noise")):
        assert g[name]["difference"] == pytest.approx(diff, abs=1e-12) and g[name]["verdict"] == verdict
        assert g[name]["sd_per_seed"] == pytest.approx(0.0244949, abs=1e-7) and g[name]["noise_sd"] == pytest.approx(0.0141421, abs=1e-7)
        assert g[name]["threshold"] == k and g[name]["seeds"] == 3 and "4 dof" in g[name]["noise_source"]
        assert g[name]["detectable"] == pytest.approx(power.detectable_gain(0.0244949, 3, 2), rel=1e-6)
    near = _gains(_planted_comp({0: 4.00, 1: 4.02, 2: 3.98}, a={0: 4.03, 1: 4.03, 2: 3.99}, b={0: 4.01, 1: 4.06, 2: 3.99}), None)
    assert near["a"]["verdict"] == near["b"]["verdict"] == "within noise"  # 0.0167 and 0.02 < k·se
    # one seed: the noise of a difference is √2·σ·(mean of the two totals), the threshold 2
    one = _gains(_planted_comp({0: 4.0}, a={0: 4.2}, b={0: 4.05}, c={0: 3.7}), 0.01)
    assert one["a"]["noise_sd"] == pytest.approx(0.0579828, abs=1e-7) and one["a"]["verdict"] == "optimal better, beyond noise"
    assert one["b"]["noise_sd"] == pytest.approx(0.0569221, abs=1e-7) and one["b"]["verdict"] == "within noise"
    assert one["c"]["verdict"] == "baseline better, beyond noise" and one["a"]["threshold"] == 2.0
    assert _gains(_planted_comp({0: 4.0}, a={0: 4.2}), None)["a"]["verdict"] == "unknown (no seed repeats)"


# --- config and plan ----------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, **changes) -> Path:
    d = yaml.safe_load((ROOT / "studies" / "default.yaml").read_text())
    d.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize("field,value,words", [("confirm_seeds", 0, "confirm_seeds must be >= 1"),
                                               ("confirm_seeds", 2.5, "confirm_seeds must be a whole number"),
                                               ("confirm_budget", -1, "confirm_budget must be > 0"),
                                               ("seed_noise", 2, "seed_noise must be in (0, 1)"),
                                               ("expected_gain", "lots", "expected_gain must be a number")])
def test_power_settings_are_validated(tmp_path, field, value, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_study(_config(tmp_path, **{field: value}))


def test_confirmation_runs_are_paired_and_budgeted(tmp_path):
    from nemo_mlsl.study.plan import confirm_seeds, phase2, phase2_size

    nparams = {"cpu_15k": 13_408, "cpu_60k": 60_144, "cpu_250k": 261_680}
    cfg = load_study(_config(tmp_path, confirm_seeds=3))
    mixtures = {"optimal": {"a": 0.5, "b": 0.5}, "uniform": {"a": 0.5, "b": 0.5}, "natural": {"a": 0.8, "b": 0.2}}
    runs = phase2(cfg, mixtures, nparams)
    confirm = [r for r in runs if r.purpose == "confirm"]
    assert len(confirm) == 9 and len([r for r in runs if r.purpose == "naive"]) == 3
    for m in mixtures:  # every mixture the same seeds
        assert sorted(r.seed for r in confirm if r.mixture == m) == [cfg.seed, cfg.seed + 1, cfg.seed + 2]
    assert len({r.run_id for r in runs}) == len(runs)
    assert phase2_size(cfg, nparams) == (1 + len(cfg.baselines)) * 4
    per_seed = 6.0 * nparams["cpu_250k"] * cfg.confirm_tokens * 3
    budget = load_study(_config(tmp_path, confirm_budget=5.5 * per_seed, confirm_seeds=None))
    assert confirm_seeds(budget, nparams, 3) == 5  # as many as the budget buys
    both = load_study(_config(tmp_path, confirm_budget=5.5 * per_seed, confirm_seeds=2))
    assert confirm_seeds(both, nparams, 3) == 2
    with pytest.raises(ConfigError, match="confirm_budget .* buys no seed"):
        confirm_seeds(load_study(_config(tmp_path, confirm_budget=0.5 * per_seed)), nparams, 3)


# --- whole studies on a planted law -------------------------------------------------------------------------------

TRUTH = {"E": 1.2, "A": 40.0, "alpha": 0.3, "B": 300.0, "beta": 0.35}
SEED_SIGMA, RUN_SIGMA = 0.01, 0.0015  # a seed's effect (shared by paired runs) and each run's own noise, in log loss


def _normal(*key) -> float:
    u = int(hashlib.sha256("/".join(map(str, key)).encode()).hexdigest()[:12], 16) / 16**12
    from scipy.stats import norm

    return float(norm.ppf(min(max(u, 1e-9), 1 - 1e-9)))


def planted_loss(family: str, N: float, D: float, p: float, seed: int, run_id: str, gamma: dict[str, float]) -> float:
    c = TRUTH["E"] + TRUTH["A"] / N ** TRUTH["alpha"] + TRUTH["B"] / D ** TRUTH["beta"]
    noise = SEED_SIGMA * _normal("seed", seed, family) + RUN_SIGMA * _normal("run", run_id, family)
    return float(c * p ** -gamma[family] * math.exp(noise))


class PlantedBackend:
    """Trains nothing: each run's record is the planted law's loss at its (N, D, ratios, seed)."""

    name = "planted"

    def __init__(self, gamma: dict[str, float]):
        self.gamma = gamma

    def train(self, spec) -> None:
        r = spec.run
        loss = {f: planted_loss(f, r.N, r.tokens, p, r.seed, r.run_id, self.gamma) for f, p in r.ratios.items()}
        ResultsStore(spec.store).append({"run_id": r.run_id, "N": r.N, "D": r.tokens, "ratios": r.ratios, "seed": r.seed,
                                         "family_loss": loss, "realized_ratios": r.ratios, "flops": 6.0 * r.N * r.tokens,
                                         "wall_time_s": 0.0, **spec.tags})

    def describe(self, spec) -> str:
        return f"planted {spec.run_id}"


@pytest.fixture(scope="module")
def skewed_corpus(tmp_path_factory) -> Path:
    """3 families, the first with 8x the documents of the last: natural sampling favours it."""
    from nemo_mlsl.data.prepare import PrepareConfig, prepare
    from nemo_mlsl.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("skewed")
    generate(SynthConfig(families=3, languages_per_family=1, docs=120, size_spread=3.0, seed=1), root / "raw")
    prepare(PrepareConfig(inputs=[str(root / "raw")], out=str(root / "data"), families_yaml=str(root / "raw" / "families.yaml"),
                          vocab_size=256, workers=1, progress=False))
    return root / "data"


def _planted_study(tmp_path: Path, corpus: Path, gamma: dict[str, float], seeds: int):
    from nemo_mlsl.study.runner import Study

    cfg = {"name": "planted", "corpus": {"prepared": str(corpus)}, "ladder": {"fit": ["cpu_15k", "cpu_60k"], "confirm": "cpu_250k"},
           "tokens": [10000, 20000], "confirm_tokens": 20000,
           "design": {"mixtures": 5, "floor": 0.05, "independence": {"ratio": 0.3, "mixtures": 3, "floor": 0.15},
                      "repeats": {"seeds": 1, "points": 3}},
           "baselines": ["uniform", "natural"], "objective": {"type": "normalized", "min_ratio": 0.02}, "bootstrap": 20,
           "confirm_seeds": seeds}
    path = tmp_path / "planted.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log: list[str] = []
    study = Study(load_study(path), tmp_path / "out", PlantedBackend(gamma), progress=False, log=log.append)
    return study.run(), log, study


def _true_gain(gamma: dict[str, float], ratios: dict[str, float], optimum: dict[str, float]) -> float:
    """Relative gain of the optimum under the planted law's normalized objective (Σ p^-γ; the level cancels)."""
    t = lambda r: sum(r[f] ** -gamma[f] for f in gamma)  # noqa: E731
    return (t(ratios) - t(optimum)) / t(ratios)


def test_planted_law_verdicts_match_the_truth(tmp_path, skewed_corpus):
    """Equal γ: the optimum is uniform sampling, so the report must say "within noise" against uniform; natural
    sampling (8:1 family sizes) is truly worse by more than the detectable gain: "beyond noise"."""
    gamma = {"amber": 0.12, "cobalt": 0.12, "jade": 0.12}
    s, log, study = _planted_study(tmp_path, skewed_corpus, gamma, seeds=3)
    opt = s["optimal_ratios"]
    assert all(abs(p - 1 / 3) < 0.03 for p in opt.values()), opt
    g = s["gains"]
    assert g["uniform"]["seeds"] == g["natural"]["seeds"] == 3
    ideal = {f: 1 / 3 for f in gamma}
    truth = {name: _true_gain(gamma, s["comparison"][name]["ratios"], ideal) for name in g}
    assert truth["uniform"] == pytest.approx(0.0, abs=1e-9)
    assert truth["natural"] > 2 * g["natural"]["detectable_relative"]  # the planted difference is well beyond what it detects
    assert g["uniform"]["verdict"] == "within noise", g["uniform"]
    assert g["natural"]["verdict"] == "optimal better, beyond noise", g["natural"]
    # paired seeds: the shared seed effect cancels, so the paired noise is far below the unpaired √2·σ
    assert g["natural"]["sd_per_seed"] < 0.5 * power.unpaired_sd(s["seed_noise"]["sigma"], s["comparison"]["optimal"]["total_observed"])
    # the observed gain's interval covers the planted one, and the predicted gain is close to it
    lo, hi = (x / s["comparison"]["natural"]["total_observed"] for x in g["natural"]["interval"])
    assert lo <= truth["natural"] <= hi
    assert g["natural"]["predicted_relative"] == pytest.approx(truth["natural"], abs=0.005)
    assert any("confirmation power" in line for line in log)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "detectable gain" in md and "**within noise**" in md and "**optimal better, beyond noise**" in md
    assert (tmp_path / "out" / "gains.png").exists()
    from nemo_mlsl.study.report import gain_lines

    # a dry run of the finished study states the power from its fit and measured noise
    dry, pl = study.dry_run_power(study.run(dry_run=True))
    assert "predicted by the fit" in dry[0] and "(measured)" in dry[0]
    for p in pl:
        assert p.predicted_gain == pytest.approx(g[p.baseline]["predicted_relative"], abs=1e-9)

    lines = gain_lines(s)
    assert lines[0].startswith("gain over uniform: observed") and lines[0].endswith("within noise")
    assert f"detectable {100 * g['natural']['detectable_relative']:.2f}%" in lines[1] and "3 paired seed(s)" in lines[1]


def test_planted_law_with_distinct_gammas_is_detected_against_both(tmp_path, skewed_corpus):
    """γ rising from the largest family to the smallest: uniform and natural are both truly worse than the optimum;
    each verdict is "beyond noise" exactly when the planted gain exceeds the detectable gain."""
    gamma = {"amber": 0.04, "cobalt": 0.15, "jade": 0.3}
    s, _, _ = _planted_study(tmp_path, skewed_corpus, gamma, seeds=3)
    ideal = {f: gamma[f] / sum(gamma.values()) for f in gamma}  # argmin Σ p^-γ ≈ p ∝ γ for small γ; checked below
    for name, g in s["gains"].items():
        truth = _true_gain(gamma, s["comparison"][name]["ratios"], s["optimal_ratios"])
        assert truth > 0
        if truth > 1.5 * g["detectable_relative"]:
            assert g["verdict"] == "optimal better, beyond noise", (name, truth, g)
    assert s["gains"]["natural"]["verdict"] == "optimal better, beyond noise"
    assert _true_gain(gamma, ideal, s["optimal_ratios"]) < 0.002  # the fitted optimum is (nearly) the planted one


def test_dry_run_states_power_up_front(tmp_path, skewed_corpus):
    """Before any run: the detectable gain from the given noise and seeds, and a warning when the expected gain is below it."""
    from nemo_mlsl.study.runner import Study

    cfg = {"name": "dry", "corpus": {"prepared": str(skewed_corpus)}, "ladder": {"fit": ["cpu_15k", "cpu_60k"], "confirm": "cpu_250k"},
           "tokens": [10000, 20000], "confirm_tokens": 20000, "baselines": ["uniform"], "confirm_seeds": 2,
           "seed_noise": 0.02, "expected_gain": 0.01}
    path = tmp_path / "dry.yaml"
    path.write_text(yaml.safe_dump(cfg))
    study = Study(load_study(path), tmp_path / "out", PlantedBackend({}), progress=False)
    lines, pl = study.dry_run_power(study.run(dry_run=True))
    det = power.detectable_gain(power.unpaired_sd(0.02), 2)
    assert pl[0].detectable_gain == pytest.approx(det) and pl[0].sigma_source == "given"
    assert pl[0].detectable is False and pl[0].seeds_needed == power.seeds_needed(0.01, power.unpaired_sd(0.02))
    text = "\n".join(lines)
    assert "NOT detectable with 2 seed(s)" in text and f"{100 * det:.2f}%" in text and "σ = 2.00%" in text

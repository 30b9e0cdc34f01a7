"""Bad input is refused where it enters (typed configs, loaders), by name and with the fix: a study config whole at
load, so that `mlsl study --dry-run` refuses what the run would refuse after hours of phase 1."""

import json
from pathlib import Path

import pytest
import yaml

from nemo_mlsl.errors import ConfigError, DataError, MLSLError
from nemo_mlsl.recipes import TrainSettings, load
from nemo_mlsl.study.config import load_study
from nemo_mlsl.typed_config import coerce, typed

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "studies" / "default.yaml").read_text())


def study_with(tmp_path, **changes):
    doc = {**DEFAULT, **changes}
    for key in [k for k, v in changes.items() if v is None]:
        doc.pop(key)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("changes,match", [
    ({"law": "nosuch"}, r"law: unknown law 'nosuch'; available: .*joint_family"),
    ({"law": "chinchilla"}, r"law 'chinchilla' cannot run a study: 'chinchilla' does not depend on the mixture .*; a study takes "
                            r"a mixture-aware law with N and D terms: .*shukor_joint"),
    ({"law": "family_power"}, r"law 'family_power' cannot run a study: 'family_power' has no N and D terms"),
    ({"design": {**DEFAULT["design"], "zeros": -1}}, r"design.zeros must be >= 0"),
    ({"design": {**DEFAULT["design"], "zeros": 2}}, r"law 'joint_family' cannot take the design.zeros runs: .*share of 0; use a "
                                                    r"law that takes zero shares \(atlas, .*shukor_joint.*\) or law: auto"),
    ({"law": "atlas:x"}, r"law: law atlas:x: the argument is the number of transfer families"),
    ({"law": 3}, r"law = 3 must be a string|unknown law '3'"),
    ({"baselines": ["uniform", "nosuch"]}, r"baselines\[1\] 'nosuch': unknown mixture 'nosuch'"),
    ({"baselines": ["temperature:abc"]}, r"baselines\[0\] 'temperature:abc': mixture 'temperature': argument 'abc' is not a number"),
    ({"baselines": "uniform"}, r"baselines = 'uniform' must be a list"),
    ({"within": "nosuch"}, r"within 'nosuch': unknown mixture"),
    ({"tokens": [100000, -5]}, r"token budgets and must be >= 1"),
    ({"tokens": [100000, 100000]}, r"at least 2 distinct token budgets"),
    ({"tokens": ["many", 5]}, r"tokens\[0\] = 'many' must be an integer"),
    ({"confirm_tokens": 0}, r"confirm_tokens 0"),
    ({"confirm_tokens": None}, r"confirm_tokens is missing"),
    ({"bootstrap": -1}, r"bootstrap is a number of replicates and must be >= 0, got -1"),
    ({"bootstrap": "lots"}, r"bootstrap = 'lots' must be an integer"),
    ({"seed": -1}, r"seed must be >= 0"),
    ({"ladder": {"fit": ["cpu_15k", "nosuch"], "confirm": "cpu_250k"}}, r"ladder.fit\[1\]: unknown recipe 'nosuch'"),
    ({"ladder": {"fit": ["cpu_15k", "cpu_60k"], "confirm": "cpu_60k"}}, r"ladder.confirm 'cpu_60k' is also a fit rung"),
    ({"ladder": {"fit": ["cpu_15k", "cpu_15k"], "confirm": "cpu_250k"}}, r"at least 2 distinct rungs"),
    ({"ladder": ["cpu_15k"]}, r"ladder must be a mapping"),
    ({"design": {"mixtures": 1}}, r"design.mixtures must be >= 2"),
    ({"design": {"repeats": {"seeds": 1, "points": 9}}}, r"design.repeats.points \(9\) must be <= design.independence.mixtures"),
    ({"design": {"independence": {"ratio": 1.5}}}, r"design.independence.ratio must be in \(0, 1\), got 1.5"),
    ({"design": {"independence": {"nosuch": 1}}}, r"design.independence: unknown field\(s\) \['nosuch'\]"),
    ({"design": {"mixtures": "five"}}, r"design: mixtures = 'five' must be an integer"),
    ({"objective": {"type": "nosuch"}}, r"objective.type must be normalized or raw"),
    ({"objective": {"min_ratio": 2}}, r"objective.min_ratio must be in \[0, 1\)"),
    ({"executor": {"type": "nosuch"}}, r"executor.type must be one of inline, local, slurm"),
    ({"executor": {"max_parallel": "x"}}, r"executor.max_parallel = 'x' must be an integer"),
    ({"executor": {"nosuch": 1}}, r"executor: unknown field\(s\) \['nosuch'\]"),
    ({"corpus": {"synth": {"families": 2}, "prepared": "data"}}, r"corpus: give exactly one of synth, text or prepared"),
    ({"corpus": {"vocab_size": "big", "prepared": "d"}}, r"corpus.vocab_size = 'big' must be an integer"),
    ({"nosuch": 1}, r"unknown key\(s\) \['nosuch'\]"),
])
def test_a_study_config_is_validated_whole_at_load(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        load_study(study_with(tmp_path, **changes))


@pytest.mark.parametrize("law", ["shukor_joint", "shukor_additive", "ye_mixing", "loglinear", "atlas", "atlas:2"])
def test_a_study_takes_a_cross_family_law_with_n_and_d_terms(tmp_path, law):
    """Issue 23 item 4: a named non-separable law that predicts the confirmation rung is accepted, zero design too."""
    cfg = load_study(study_with(tmp_path, law=law, design={**DEFAULT["design"], "zeros": 2}))
    assert cfg.law == law and cfg.design.zeros == 2


def test_a_refused_study_law_is_one_line_naming_the_laws_that_can(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_study(study_with(tmp_path, law="family_power"))
    msg = str(err.value)
    assert "\n" not in msg and "'family_power'" in msg
    for ok in ("joint_family", "shukor_joint", "atlas", "ye_mixing"):
        assert ok in msg.split("a study takes")[1]
    assert "chinchilla" not in msg.split("a study takes")[1]


def test_the_study_candidates_are_the_mixture_aware_laws_with_n_and_d_terms(monkeypatch):
    """`law: auto` chooses among them: the cross-family laws with N and D terms are in, the rest out; decided by the
    law's attributes, so a third-party law declares it (``extrapolates_nd``)."""
    from nemo_mlsl.fitting.optimize import study_law_problem
    from nemo_mlsl.laws.cross import CrossFamilyLaw
    from nemo_mlsl.laws.family_power import FamilyPowerLaw
    from nemo_mlsl.registry import LAWS
    from nemo_mlsl.study.runner import study_laws

    got = study_laws()
    assert {"joint_family", "shukor_joint", "shukor_additive", "ye_mixing", "loglinear", "atlas"} <= set(got)
    assert not {"family_power", "chinchilla"} & set(got)
    for name in got:
        cls = LAWS.get(name)
        assert cls.mixture_aware and cls.extrapolates_nd and study_law_problem(name) is None

    class ThirdParty(CrossFamilyLaw):
        name = "third_party"

    class Declared(FamilyPowerLaw):
        name = "declared"
        extrapolates_nd = True

    class Undeclared(ThirdParty):
        name = "undeclared"
        extrapolates_nd = False

    for cls in (ThirdParty, Declared, Undeclared):
        monkeypatch.setitem(LAWS._extra, cls.name, cls)
    got = study_laws()
    assert "third_party" in got and "declared" in got and "undeclared" not in got


def test_the_shipped_study_configs_load():
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        for quick in (False, True):
            assert load_study(path, quick=quick).law


def test_a_study_law_needs_the_runs_its_design_gives(tmp_path, monkeypatch):
    """A law usable by a study still needs enough runs and distinct N, D and p from the design (its requirements())."""
    import nemo_mlsl.fitting.optimize
    from nemo_mlsl.laws.joint_family import JointFamilyLaw
    from nemo_mlsl.registry import LAWS

    class Hungry(JointFamilyLaw):
        name = "hungry"

        def requirements(self):
            return {"runs": 500, "N": 2, "D": 2, "p": 2}

    monkeypatch.setitem(LAWS._extra, "hungry", Hungry)
    monkeypatch.setattr(nemo_mlsl.fitting.optimize, "SEPARABLE_LAWS", (*nemo_mlsl.fitting.optimize.SEPARABLE_LAWS, "hungry"))
    with pytest.raises(ConfigError, match=r"law 'hungry' needs at least 500 runs per family; this design gives 2\d "):
        load_study(study_with(tmp_path, law="hungry"))


@pytest.mark.parametrize("text,match", [
    ("name: x\nladder: {fit: [a\n", r"is not valid YAML at line 3, column 1"),
    ("", r"is empty, not a mapping"),
    ("- 1\n- 2\n", r"is a list, not a mapping"),
    ("name: ${nosuch}\nladder: {fit: [cpu_15k, cpu_60k], confirm: cpu_250k}\ntokens: [1, 2]\nconfirm_tokens: 2\n",
     r"Interpolation key 'nosuch' not found"),
])
def test_a_malformed_study_file_is_a_named_error(tmp_path, text, match):
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_study(tmp_path / "s.yaml")


def test_dry_run_refuses_a_law_the_run_would_refuse_after_phase_1(tmp_path, capsys):
    """Issue 18 item 7: `law: chinchilla` used to pass --dry-run and fail after phase 1 had trained."""
    from nemo_mlsl.cli import main

    assert main(["study", "--config", str(study_with(tmp_path, law="chinchilla")), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlsl study: error: ") and "cannot run a study" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("override,match", [
    ("train.lr=abc", r"train.lr = 'abc' must be a number"),
    ("train.schedule=nosuch", r"schedule must be one of wsd, cosine, constant, got 'nosuch'"),
    ("train.max_steps=0", r"max_steps must be >= 1"),
    ("train.max_steps=2.5", r"train.max_steps = 2.5 must be an integer or null"),
    ("train.tokens=-5", r"tokens must be >= 1"),
    ("train.global_batch_size=0", r"global_batch_size must be >= 1"),
    ("train.min_lr=-1", r"min_lr must be a finite number >= 0, got -1"),
    ("train.lr=.nan", r"lr must be a finite number >= 0, got nan"),
    ("train.warmup_steps=-1", r"warmup_steps must be >= 0"),
    ("model.num_layers=x", r"model.num_layers = 'x' must be an integer"),
    ("parallel.sequence_parallel=maybe", r"parallel.sequence_parallel = 'maybe' must be true or false"),
])
def test_recipe_overrides_are_typed_and_checked(override, match):
    with pytest.raises(ConfigError, match=match):
        load("cpu_15k", [override])


def test_typed_values_coerce_only_what_is_safe():
    assert coerce(2e5, int, "t") == 200000 and isinstance(coerce(3, float, "t"), float)
    assert coerce(None, int | None, "t") is None and coerce(["a", "b"], list[str], "t") == ["a", "b"]
    assert coerce({"A": 4}, dict[str, str], "env") == {"A": "4"}  # a YAML number where a string is meant
    for value, hint in ((True, int), (2.5, int), ("1", int), (None, int), ("x", float), ([1], str), (1, bool), ({"a": 1}, list[str])):
        with pytest.raises(ConfigError, match="must be"):
            coerce(value, hint, "field")
    with pytest.raises(ConfigError, match=r"where must be a mapping of fields"):
        typed(TrainSettings, ["lr"], "where")


@pytest.mark.parametrize("max_steps,tokens,match", [
    (0, None, r"--max-steps must be a whole number >= 1, got 0"),
    (-3, None, r"--max-steps must be a whole number >= 1, got -3"),
    (None, 0.0, r"--tokens must be a positive number of training tokens, got 0"),
    (None, float("nan"), r"--tokens must be a positive number"),
    (5, 1e5, r"give --tokens or --max-steps, not both"),
])
def test_zero_or_negative_steps_are_refused_not_the_recipe_length(max_steps, tokens, match):
    """`train --max-steps 0` and `--tokens 0` used to train the recipe's full length."""
    t = load("cpu_15k").train
    with pytest.raises(ConfigError, match=match):
        t.run_steps(max_steps, tokens)
    assert t.run_steps(7, None) == 7 and t.run_steps(None, t.global_batch_size * t.seq_length * 3) == 3
    assert t.run_steps() == t.resolved_max_steps


def test_user_files_missing_empty_corrupt_or_of_the_wrong_shape(tmp_path):
    from nemo_mlsl.data.manifest import Manifest
    from nemo_mlsl.families import FamilyMap
    from nemo_mlsl.fitting.lawfit import load_fit_doc

    (tmp_path / "bad.yaml").write_text("families: [a, b\n  c: :\n")
    with pytest.raises(ConfigError, match=r"families file '.*bad.yaml' is not valid YAML at line 2, column 4"):
        FamilyMap.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00families")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text"):
        FamilyMap.from_yaml(tmp_path / "bin.yaml")
    with pytest.raises(ConfigError, match=r"is a directory; give the file"):
        FamilyMap.from_yaml(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match=r"manifest '.*manifest.json' is not valid JSON \(line 1, column 2: .*re-run `mlsl prepare --force"):
        Manifest.load(tmp_path / "data")
    (tmp_path / "data" / "manifest.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"schema_version None"):
        Manifest.load(tmp_path / "data")
    (tmp_path / "fit.json").write_text(json.dumps({"law": "joint_family", "families": {"a": {"params": {"gamma": "x"}}}}))
    with pytest.raises(ConfigError, match=r"family 'a' has parameters that are not finite numbers \{'gamma': 'x'\}"):
        load_fit_doc(tmp_path / "fit.json")


def test_prepare_configs_refuse_what_no_preparation_can_do(tmp_path):
    from nemo_mlsl.data.from_indexed import IndexedConfig
    from nemo_mlsl.data.prepare import PrepareConfig

    with pytest.raises(ConfigError, match=r"--val-docs is the number of validation documents per language and must be >= 1, got -1"):
        PrepareConfig(inputs=["x"], out="o", val_docs=-1)
    with pytest.raises(ConfigError, match=r"--workers must be >= 1, got 0"):
        PrepareConfig(inputs=["x"], out="o", workers=0)
    with pytest.raises(ConfigError, match=r"--val-docs .* must be >= 1, got 0"):
        IndexedConfig(spec="s", tokenizer="t", out="o", val_docs=0)


def test_outputs_go_where_they_can(tmp_path):
    import matplotlib.pyplot as plt

    from nemo_mlsl.data.synth import SynthConfig, generate
    from nemo_mlsl.fitting.plots import save

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"--out '.*file': '.*file' is a file, not a directory; choose another --out"):
        generate(SynthConfig(families=1, docs=10), tmp_path / "file")
    with pytest.raises(ConfigError, match=r"is a file, not a directory"):
        save(plt.figure(), tmp_path / "file" / "p.png")
    assert save(plt.figure(), tmp_path / "new" / "dir" / "p.png").is_file()  # a missing directory is made


def test_every_named_error_is_an_mlsl_error():
    assert issubclass(ConfigError, MLSLError) and issubclass(DataError, MLSLError)

"""Importers: CSV pairs, olmix swarms and Megatron TensorBoard logs become store records; what they cannot map is named."""

import os
from pathlib import Path

import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.importers import MappingError
from nemo_mlsl.importers.csv_pair import CsvPairSpec, import_csv_pair
from nemo_mlsl.importers.olmix import import_olmix
from nemo_mlsl.importers.tensorboard import import_tensorboard, runs_table
from nemo_mlsl.results import ResultsStore

# the public RegMix runs, where the repository sits next to shared/ (or MLSL_REGMIX points at them)
REGMIX = Path(os.environ.get("MLSL_REGMIX", Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"))


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def pair(tmp_path):
    shares = write(tmp_path / "shares.csv", "index,train_en,train_de,train_fi,params\n"
                                            "a,0.5,0.3,0.2,1e6\nb,0.001,0.5,0.498,2e6\nc,1.0,0.0,0.0,1e6\n")
    losses = write(tmp_path / "losses.csv", "index,val/en_loss,val/de_loss\na,3.1,3.5\nb,3.9,3.2\nc,3.0,\n")
    return shares, losses


def spec(pair, **kw):
    base = {"share_pattern": r"train_(?P<family>\w+)", "loss_pattern": r"val/(?P<family>\w+)_loss", "N_column": "params", "D": 1e9}
    return CsvPairSpec(pair[0], pair[1], **{**base, **kw})


def test_csv_pair_maps_columns_by_pattern_and_joins_on_the_index(pair, tmp_path):
    s = spec(pair)
    recs = import_csv_pair(s)
    assert [r["run_id"] for r in recs] == ["a", "b", "c"]
    assert recs[0]["ratios"] == {"en": 0.5, "de": 0.3, "fi": 0.2} and recs[0]["family_loss"] == {"en": 3.1, "de": 3.5}
    assert [r["N"] for r in recs] == [1e6, 2e6, 1e6] and all(r["D"] == 1e9 for r in recs)
    assert recs[2]["family_loss"] == {"en": 3.0}  # an empty cell: not evaluated there
    assert sum(recs[1]["ratios"].values()) == pytest.approx(1.0) and recs[1]["ratios"]["en"] == pytest.approx(0.001 / 0.999)
    assert len(s.warnings) == 1 and "'b'" in s.warnings[0]  # shares summing to 0.999 are renormalized, the run named
    assert ResultsStore(tmp_path / "r.jsonl").extend(recs) == 3  # valid store records


def test_share_columns_of_one_family_are_summed(tmp_path):
    shares = write(tmp_path / "s.csv", "run,lang_qaa_amber,lang_qab_amber,lang_qac_jade\nx,0.25,0.25,0.5\n")
    losses = write(tmp_path / "l.csv", "run,amber,jade\nx,2.0,2.5\n")
    rec = import_csv_pair(CsvPairSpec(shares, losses, index="run", share_pattern=r"lang_\w+?_(?P<family>\w+)", N=1, D=2))[0]
    assert rec["ratios"] == {"amber": 0.5, "jade": 0.5}


@pytest.mark.parametrize("change, needle", [
    ({"loss_pattern": r"loss_(?P<family>\w+)"}, "column 'val/en_loss' does not match --loss-pattern"),
    ({"index": "run"}, "no index column 'run'"),
    ({"N_column": None, "N": None, "ignore": ("params",)}, "give N for every run"),
    ({"N_column": None, "N": None}, "column 'params' does not match --share-pattern"),
    ({"share_pattern": r"train_(?P<family>e)\w+"}, "column 'train_de' does not match --share-pattern"),
])
def test_csv_pair_names_what_it_cannot_map(pair, change, needle):
    with pytest.raises(ConfigError) as err:
        import_csv_pair(spec(pair, **change))
    assert needle in str(err.value)


def test_csv_pair_names_runs_that_do_not_join_or_sum_far_from_one(pair, tmp_path):
    write(Path(pair[1]), "index,val/en_loss,val/de_loss\na,3.1,3.5\nb,3.9,3.2\n")
    with pytest.raises(MappingError, match="run 'c' has shares but no losses"):
        import_csv_pair(spec(pair))
    write(Path(pair[0]), "index,train_en,train_de,params\na,0.5,0.3,1\nb,0.5,0.5,1\n")
    with pytest.raises(ConfigError, match="run 'a'.*sum to 0.8"):
        import_csv_pair(spec(pair))


def test_olmix_swarm_files(tmp_path):
    write(tmp_path / "ratios.csv", "run,name,dclm,wikipedia,arxiv\nrun_001,first,0.45,0.30,0.25\nrun_002,second,0.6,0.2,0.2\n")
    write(tmp_path / "metrics.csv", "run,arc_challenge_bpb,hellaswag_bpb\nrun_001,1.23,0.87\nrun_002,1.15,0.91\n")
    recs = import_olmix(str(tmp_path), N=30e6, D=3e9, metric_pattern=r"(?P<family>\w+)_bpb")
    assert recs[1]["ratios"] == {"dclm": 0.6, "wikipedia": 0.2, "arxiv": 0.2}
    assert recs[1]["family_loss"] == {"arc_challenge": 1.15, "hellaswag": 0.91} and recs[1]["N"] == 30e6
    with pytest.raises(MappingError, match="column 'arc_challenge_bpb' does not match --loss-pattern"):
        import_olmix(str(tmp_path), N=1, D=1, metric_pattern=r"(?P<family>\w+)_loss")


def megatron_log(root: Path, run: str, losses_by_step: dict[int, dict[str, float]]) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    d = root / run
    w = SummaryWriter(str(d))
    for step, losses in losses_by_step.items():
        w.add_scalar("lm loss", 9.0, step)
        for name, loss in losses.items():
            w.add_scalar(f"lm loss validation-{name}", loss, step)
            w.add_scalar(f"lm loss validation ppl-{name}", 2.718 ** loss, step)
    w.close()
    return d


def test_megatron_tensorboard_logs_give_the_last_validation_loss_per_named_set(tmp_path):
    a = megatron_log(tmp_path, "mix_a", {100: {"val_en": 4.0, "val_de": 4.5}, 200: {"val_en": 3.5, "val_de": 3.9}})
    b = megatron_log(tmp_path, "mix_b", {200: {"val_en": 3.8, "val_de": 3.6}})
    table = write(tmp_path / "runs.csv", "run,N,D,en,de\nmix_a,1e8,2e9,0.7,0.3\nmix_b,1e8,2e9,0.2,0.8\n")
    recs = import_tensorboard([str(a), str(b)], runs_table(table), name_pattern=r"val_(?P<family>\w+)")
    assert recs[0]["family_loss"] == pytest.approx({"en": 3.5, "de": 3.9})
    assert recs[1]["ratios"] == {"en": 0.2, "de": 0.8} and recs[1]["N"] == 1e8 and recs[1]["D"] == 2e9
    with pytest.raises(MappingError, match="validation set 'val_de' does not match --name-pattern"):
        import_tensorboard([str(a)], runs_table(table), name_pattern=r"val_(?P<family>en)")
    with pytest.raises(MappingError, match="run 'mix_c'.*no row in the runs table"):
        import_tensorboard([str(megatron_log(tmp_path, "mix_c", {1: {"val_en": 3.0}}))], runs_table(table))
    empty = tmp_path / "no_named_sets"
    megatron_log(tmp_path, "no_named_sets", {1: {}})
    with pytest.raises(MappingError, match="no scalar 'lm loss validation-<name>'"):
        import_tensorboard([str(empty)], {"no_named_sets": {"ratios": {"en": 1.0}, "N": 1, "D": 1}})


@pytest.mark.skipif(not REGMIX.is_dir(), reason="the public RegMix runs are not on this machine")
def test_regmix_runs_import_with_zero_shares_and_a_subset_of_families():
    recs = import_csv_pair(CsvPairSpec(str(REGMIX / "train_mixture_1m.csv"), str(REGMIX / "train_pile_loss_1m.csv"),
                                       share_pattern=r"train_the_pile_(?P<family>.+)",
                                       loss_pattern=r"metric/the_pile_(?P<family>.+)_val_loss", N=1e6, D=1e9))
    assert len(recs) == 512 and all(len(r["ratios"]) == 17 and len(r["family_loss"]) == 13 for r in recs)
    assert any(r["ratios"]["arxiv"] == 0 for r in recs)

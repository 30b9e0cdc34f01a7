"""Importers: CSV pairs, olmix swarms and Megatron TensorBoard logs become store records; what they cannot map is named."""

import os
import re
from pathlib import Path

import pytest

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.importers import MappingError
from nemo_mlsl.importers.csv_pair import CsvPairSpec, import_csv_pair
from nemo_mlsl.importers.olmix import import_olmix
from nemo_mlsl.importers.tensorboard import import_tensorboard, runs_table
from nemo_mlsl.results import ResultsStore

# the public RegMix runs and olmix's DCLM swarm, where the repository sits next to shared/ (or MLSL_REGMIX and
# MLSL_OLMIX point at them)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REGMIX = Path(os.environ.get("MLSL_REGMIX", SHARED / "regmix"))
OLMIX = Path(os.environ.get("MLSL_OLMIX", SHARED / "olmix" / "dclm_swarm"))
needs_regmix = pytest.mark.skipif(not REGMIX.is_dir(), reason="the public RegMix runs are not on this machine")
needs_olmix = pytest.mark.skipif(not OLMIX.is_dir(), reason="olmix's public DCLM swarm is not on this machine")


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
    with pytest.raises(MappingError, match=r"no column matches --loss-pattern .*_loss'.*arc_challenge_bpb"):
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


@needs_regmix
def test_regmix_runs_import_with_zero_shares_and_a_subset_of_families():
    recs = import_csv_pair(CsvPairSpec(str(REGMIX / "train_mixture_1m.csv"), str(REGMIX / "train_pile_loss_1m.csv"),
                                       share_pattern=r"train_the_pile_(?P<family>.+)",
                                       loss_pattern=r"metric/the_pile_(?P<family>.+)_val_loss", N=1e6, D=1e9))
    assert len(recs) == 512 and all(len(r["ratios"]) == 17 and len(r["family_loss"]) == 13 for r in recs)
    assert any(r["ratios"]["arxiv"] == 0 for r in recs)


# -- files as their authors publish them ------------------------------------------------------------------------


def published_table(path: Path) -> tuple[list[str], list[list[str]]]:
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


@needs_olmix
def test_olmix_swarm_imports_as_olmix_writes_it(tmp_path):
    """olmix's own files: a leading unnamed pandas index, then run, name, index, then the data; rows pair by run."""
    head, rows = published_table(OLMIX / "ratios.csv")
    mhead, mrows = published_table(OLMIX / "metrics.csv")
    assert head[:4] == ["", "run", "name", "index"] and mhead[:4] == ["", "run", "name", "index"]  # the README's layout
    notes: list[str] = []
    recs = import_olmix(str(OLMIX), N=30e6, D=3e9, notes=notes)
    assert len(recs) == len(rows) == 127 and [r["run_id"] for r in recs] == [r[1] for r in rows]
    domains, metrics = head[4:], mhead[4:]
    assert len(domains) == 24 and len(metrics) == 110
    by_run = {r[1]: r for r in mrows}
    for rec, row in zip(recs, rows):
        assert set(rec["ratios"]) == set(domains) and set(rec["family_loss"]) == set(metrics)  # no run/name/index/''
        assert rec["ratios"] == pytest.approx({d: float(v) for d, v in zip(domains, row[4:])}, rel=1e-12)
        assert rec["family_loss"] == {m: float(v) for m, v in zip(metrics, by_run[rec["run_id"]][4:])}
        assert rec["N"] == 30e6 and rec["D"] == 3e9 and rec["source"] == "olmix"
    assert sum(r["ratios"]["adult_content"] == 0 for r in recs) > 60  # most shares are 0
    assert notes == ["read ratios.csv: 1 column(s) without a name skipped (position 1: a pandas index)",
                     "read metrics.csv: 1 column(s) without a name skipped (position 1: a pandas index)"]
    assert ResultsStore(tmp_path / "r.jsonl").extend(recs) == 127


@needs_olmix
def test_olmix_swarm_from_the_cli_takes_a_subset_of_metrics_and_fits_them_from_the_whole_mixture(tmp_path):
    from conftest import run_cli

    out = tmp_path / "runs.jsonl"
    proc = run_cli("import-runs", "olmix", "--swarm", OLMIX, "--N", "30e6", "--D", "3e9", "--out", out,
                   "--loss-pattern", r"(?P<family>arc_\w+):rc::olmes")
    assert "imported 127 of 127 runs (0 already there)" in proc.stdout
    assert "24 families trained on, 2 evaluated: arc_challenge, arc_easy" in proc.stdout
    assert "2 of the 2 targets are no training family" in proc.stdout
    assert "2 of the 110 columns of metrics.csv match --loss-pattern" in proc.stdout and "(108 left out)" in proc.stdout
    refused = run_cli("fit", "--runs", out, "--law", "joint_family", "--out", tmp_path / "jf", check=False)
    assert refused.returncode == 2 and "'arc_challenge', 'arc_easy' are no training families" in refused.stderr
    fitted = run_cli("fit", "--runs", out, "--law", "loglinear", "--out", tmp_path / "ll")
    assert "fitted loglinear to 127 runs" in fitted.stdout


def rewrite(src: Path, dst: Path, *, delimiter: str = ",", bom: bool = False, decimal_comma: bool = False) -> str:
    """``src`` (a published CSV) written again as a spreadsheet would save it."""
    import csv
    import io

    head, rows = published_table(src)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    w.writerow(head)
    for r in rows:
        w.writerow([c.replace(".", ",") if decimal_comma and c.replace(".", "", 1).isdigit() and "." in c else c for c in r])
    dst.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8"))
    return str(dst)


REGMIX_SPEC = {"share_pattern": r"train_the_pile_(?P<family>.+)", "loss_pattern": r"metric/the_pile_(?P<family>.+)_val_loss",
               "N": 1e6, "D": 1e9}


@needs_regmix
@pytest.mark.parametrize("delimiter, bom, decimal_comma, said", [
    (",", True, False, "a UTF-8 byte-order mark"),  # Excel's "CSV UTF-8"
    (";", False, False, "';' separators"),
    (";", True, True, "a UTF-8 byte-order mark, ';' separators, decimal commas"),  # Excel in a decimal-comma locale
    ("\t", False, False, "tab separators"),
])
def test_regmix_csvs_saved_by_a_spreadsheet_import_as_the_originals(tmp_path, delimiter, bom, decimal_comma, said):
    original = import_csv_pair(CsvPairSpec(str(REGMIX / "test_mixture_1B.csv"), str(REGMIX / "test_pile_loss_1B.csv"), **REGMIX_SPEC))
    kw = {"delimiter": delimiter, "bom": bom, "decimal_comma": decimal_comma}
    spec = CsvPairSpec(rewrite(REGMIX / "test_mixture_1B.csv", tmp_path / "shares.csv", **kw),
                       rewrite(REGMIX / "test_pile_loss_1B.csv", tmp_path / "losses.csv", **kw), **REGMIX_SPEC)
    if decimal_comma:
        assert re.search(r";\d+,\d+;", Path(spec.shares).read_text(encoding="utf-8-sig"))  # e.g. ;0,25;
    assert import_csv_pair(spec) == original
    assert spec.notes == [f"read shares.csv: {said}", f"read losses.csv: {said}"]
    plain = CsvPairSpec(str(REGMIX / "test_mixture_1B.csv"), str(REGMIX / "test_pile_loss_1B.csv"), **REGMIX_SPEC)
    import_csv_pair(plain)
    assert plain.notes == []  # the default dialect is not remarked upon


def test_a_byte_order_mark_no_longer_hides_the_index_column_and_a_ragged_line_is_named(tmp_path):
    shares = tmp_path / "s.csv"
    shares.write_bytes(b"\xef\xbb\xbfindex;en;de\r\na;0,5;0,5\r\nb;1;0\r\n")
    losses = write(tmp_path / "l.csv", "index,en,de\na,3.1,3.5\nb,3.0,3.9\n")
    recs = import_csv_pair(CsvPairSpec(str(shares), losses, N=1, D=1))
    assert recs[0]["ratios"] == {"en": 0.5, "de": 0.5} and recs[1]["family_loss"] == {"en": 3.0, "de": 3.9}
    write(tmp_path / "l.csv", "index,en,de\na,3.1,3.5\nb,3.0\nc,1,2\n")
    with pytest.raises(MappingError, match=r"l.csv', line 3: 2 fields where the header has 3"):
        import_csv_pair(CsvPairSpec(str(shares), str(tmp_path / "l.csv"), N=1, D=1))


# -- truncated TensorBoard logs ----------------------------------------------------------------------------------


def megatron_run(root: Path, run: str, steps: int = 200, every: int = 5) -> tuple[Path, dict[int, float]]:
    """A Megatron-style event log written by tensorboard's writer: training loss every step, a named validation set
    every ``every`` steps; returns the run directory and the validation loss by step."""
    from torch.utils.tensorboard import SummaryWriter

    d = root / run
    w = SummaryWriter(str(d))
    val = {}
    for step in range(steps):
        w.add_scalar("lm loss", 9.0 - step / 50, step)
        if step % every == 0 or step == steps - 1:
            val[step] = 4.0 - step / 100
            w.add_scalar("lm loss validation-val_en", val[step], step)
    w.close()
    return d, val


def record_ends(path: Path) -> list[tuple[int, int | None]]:
    """(byte offset where each record ends, its event's step if it logs a validation loss) of an intact event file."""
    import struct

    from tensorboard.compat.proto import event_pb2

    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
        pos += n + 16
        val = ev.HasField("summary") and any(v.tag.startswith("lm loss validation-") for v in ev.summary.value)
        out.append((pos, ev.step if val else None))
    return out


@pytest.mark.parametrize("damage", ["cut", "crc"])
def test_a_truncated_event_file_imports_with_a_warning_naming_the_run_and_the_last_step_read(tmp_path, damage):
    d, val = megatron_run(tmp_path, "mix_a")
    (events,) = list(d.glob("*tfevents*"))
    intact = events.read_bytes()
    ends = record_ends(events)
    # break the file inside the record that logs the validation loss of step 100 (a run killed while writing)
    i = next(k for k, (_, step) in enumerate(ends) if step == 100)
    start, end = ends[i - 1][0], ends[i][0]
    if damage == "cut":
        events.write_bytes(intact[: (start + end) // 2])
    else:
        broken = bytearray(intact)
        broken[end - 6] ^= 0xFF  # a flipped byte in the payload: the record's CRC32C fails, so does what follows
        events.write_bytes(bytes(broken))
    last = max(s for s in val if s < 100)
    table = {"mix_a": {"ratios": {"en": 1.0}, "N": 1e6, "D": 1e8}}
    notes: list[str] = []
    (rec,) = import_tensorboard([str(d)], table, name_pattern=r"val_(?P<family>\w+)", notes=notes)
    assert rec["family_loss"]["en"] == pytest.approx(val[last])  # the last complete record's loss, not step 199's
    (warning,) = notes
    assert warning.startswith(f"warning: run 'mix_a': event file {events.name} is truncated or corrupt at byte {start} of "
                              f"{events.stat().st_size}")
    assert ("truncated record in data" if damage == "cut" else "failed event crc32 check") in warning
    assert f"imported the losses of step {last}, the last step read" in warning
    # the CLI prints it
    from conftest import run_cli

    runs = write(tmp_path / "runs.csv", "run,N,D,en\nmix_a,1e6,1e8,1.0\n")
    proc = run_cli("import-runs", "tensorboard", d, "--runs-table", runs, "--name-pattern", r"val_(?P<family>\w+)",
                   "--out", tmp_path / "r.jsonl")
    assert f"warning: run 'mix_a': event file {events.name} is truncated" in proc.stdout and f"step {last}," in proc.stdout
    # an intact file: the final step's loss and no warning
    events.write_bytes(intact)
    notes.clear()
    (rec,) = import_tensorboard([str(d)], table, name_pattern=r"val_(?P<family>\w+)", notes=notes)
    assert rec["family_loss"]["en"] == pytest.approx(val[199]) and notes == []


def test_an_event_file_cut_before_any_validation_loss_is_a_named_error(tmp_path):
    d, _ = megatron_run(tmp_path, "mix_b")
    (events,) = list(d.glob("*tfevents*"))
    ends = record_ends(events)
    first_val = next(k for k, (_, step) in enumerate(ends) if step is not None)
    events.write_bytes(events.read_bytes()[: ends[first_val][0] - 3])
    with pytest.raises(MappingError, match=rf"run 'mix_b': no scalar 'lm loss validation-<name>'.*{events.name} is truncated"):
        import_tensorboard([str(d)], {"mix_b": {"ratios": {"en": 1.0}, "N": 1, "D": 1}})


@needs_olmix
def test_olmix_swarm_saved_by_a_spreadsheet_with_a_bom_and_semicolons_imports_as_published(tmp_path):
    """The byte-order mark lands before olmix's unnamed index header: that column is still skipped, not read as '\ufeff'."""
    original = import_olmix(str(OLMIX), N=30e6, D=3e9)
    for name in ("ratios.csv", "metrics.csv"):
        rewrite(OLMIX / name, tmp_path / name, delimiter=";", bom=True)
    assert (tmp_path / "ratios.csv").read_bytes().startswith(b"\xef\xbb\xbf;run;name;index;")
    notes: list[str] = []
    assert import_olmix(str(tmp_path), N=30e6, D=3e9, notes=notes) == original
    assert notes == [f"read {n}: a UTF-8 byte-order mark, ';' separators, 1 column(s) without a name skipped (position 1: "
                     "a pandas index)" for n in ("ratios.csv", "metrics.csv")]

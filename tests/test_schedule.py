"""The mixture schedule (issue #26): ratios that change at step boundaries, each interval megatron's own exact blend,
joined into one dataset; a resumed run reads the samples of an uninterrupted one; bad schedules refused by name."""

import json

import lightning.pytorch as pl
import numpy as np
import pytest
from conftest import run_cli

from mlsl_lightning.train import TrainRequest, train
from nemo_mlsl.data.blend import BlendConfig, FamilyBlend
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.data.schedule import MixtureSchedule, ScheduledBlend, interval_seed
from nemo_mlsl.errors import ConfigError

GBS = 8
THREE = {"intervals": [
    {"until_step": 5, "ratios": {"amber": 0.7, "cobalt": 0.2, "jade": 0.1}},
    {"until_step": 12, "ratios": {"amber": 0.0, "cobalt": 0.5, "jade": 0.5}},
    {"ratios": {"amber": 0.2, "cobalt": 0.3, "jade": 0.5}},
]}


def scheduled(data, spec=THREE, steps=20, seed=7, **kw) -> ScheduledBlend:
    cfg = BlendConfig({}, kw.pop("within", "natural"), 64, seed, kw.pop("max_epochs", 100.0), kw.pop("normalize", False))
    return ScheduledBlend(Manifest.load(data), cfg, MixtureSchedule.from_dict(spec, steps), GBS, **kw)


def tokens_of(ds, idx) -> list[list[int]]:
    return [np.asarray(ds[i]["tokens"][:8]).tolist() for i in idx]


def test_each_interval_realises_its_shares_exactly(synth_data):
    sb = scheduled(synth_data)
    built = sb.build(2)
    m = sb.manifest
    assert len(built.train) == 20 * GBS and built.schedule.boundaries == [0, 5, 12]
    for k, iv in enumerate(built.schedule.intervals):
        n = iv.steps * GBS
        audit = built.interval_audit(k)
        assert audit["samples"] == n and (audit["start_step"], audit["until_step"]) == (iv.start_step, iv.until_step)
        for fam, a in audit["families"].items():
            assert a["target"] == pytest.approx(iv.ratios[fam])
            # megatron's greedy blend: each dataset's count is within 1 sample of weight x n
            assert abs(a["samples"] - iv.ratios[fam] * n) <= len(m.families[fam]), (k, fam, a)
            if iv.ratios[fam] == 0:
                assert a["samples"] == 0
        # the same audit as `mlsl blend` gives for that interval's ratios and seed, built on its own
        alone = FamilyBlend(m, BlendConfig(iv.ratios, "natural", 64, interval_seed(7, k), 100.0)).build(n, 1)
        own = alone.audit()
        assert {f: a["samples"] for f, a in audit["families"].items()} == {f: a["samples"] for f, a in own["families"].items()}
        assert {l: a["samples"] for l, a in audit["languages"].items()} == {l: a["samples"] for l, a in own["languages"].items()}
        # and the joined dataset's samples are that blend's samples, from its first one, with the run's dataset ids
        lo = iv.start_step * GBS
        for j in (0, 1, n // 2, n - 1):
            got, want = built.train[lo + j], alone.train[j]
            assert np.array_equal(got["tokens"], want["tokens"])
            assert built.train_languages[int(got["dataset_id"])] == alone.train_languages[int(want["dataset_id"])]
            assert int(got["dataset_id"]) == int(built.train.dataset_index[lo + j])
    # the whole run's audit: targets are the steps-weighted mean ratios
    whole = built.audit()["families"]
    assert whole["amber"]["target"] == pytest.approx((0.7 * 5 + 0.0 * 7 + 0.2 * 8) / 20)
    assert sum(a["samples"] for a in whole.values()) == 20 * GBS


def test_one_interval_reads_the_samples_of_a_plain_blend(synth_data):
    ratios = {"amber": 0.5, "cobalt": 0.3, "jade": 0.2}
    sb = scheduled(synth_data, {"intervals": [{"ratios": ratios}]}, steps=6)
    built = sb.build(2)
    plain = FamilyBlend(sb.manifest, BlendConfig(ratios, "natural", 64, 7, 100.0)).build(6 * GBS, 2)
    assert sb.family_ratios == plain.blend.family_ratios and built.train_languages == plain.train_languages
    assert np.array_equal(built.train.dataset_index, np.asarray(plain.train.dataset_index[:6 * GBS]))
    assert tokens_of(built.train, range(0, 48, 5)) == tokens_of(plain.train, range(0, 48, 5))


def test_deterministic_for_a_seed_and_intervals_do_not_share_an_order(synth_data):
    a, b = scheduled(synth_data).build(2), scheduled(synth_data).build(2)
    assert np.array_equal(a.train.dataset_index, b.train.dataset_index)
    assert tokens_of(a.train, range(0, 160, 7)) == tokens_of(b.train, range(0, 160, 7))
    other = scheduled(synth_data, seed=8).build(2)
    assert tokens_of(other.train, range(0, 160, 7)) != tokens_of(a.train, range(0, 160, 7))
    same = {"intervals": [{"until_step": 4, "ratios": {"cobalt": 1.0}}, {"ratios": {"cobalt": 1.0}}]}
    two = scheduled(synth_data, same, steps=8).build(2)
    assert tokens_of(two.train, range(0, 32)) != tokens_of(two.train, range(32, 64))
    assert len({interval_seed(7, k) for k in range(50)}) == 50 and interval_seed(7, 0) == 7


def test_round_trips_through_json(tmp_path):
    s = MixtureSchedule.from_dict({"intervals": [
        {"until_step": 3, "ratios": {"amber": 1.0}},
        {"ratios": {"amber": 0.5, "cobalt": 0.5}, "reason": "ado", "evidence": {"beta": {"amber": 0.3}}}]}, 10)
    s.write(tmp_path / "schedule.json")
    back = MixtureSchedule.load(tmp_path / "schedule.json", 10)
    assert back == s and back.to_dict() == json.loads((tmp_path / "schedule.json").read_text())
    assert [iv.steps for iv in back.intervals] == [3, 7] and back.intervals[1].evidence == {"beta": {"amber": 0.3}}
    assert back.index_at(0) == 0 and back.index_at(2) == 0 and back.index_at(3) == 1 and back.ratios_at(9) == {"amber": 0.5, "cobalt": 0.5}
    assert back.mean_ratios() == pytest.approx({"amber": 0.65, "cobalt": 0.35})


def test_replaying_a_decided_interval_rebuilds_it_bit_for_bit(synth_data):
    """A resumed adaptive run replays its checkpoint's decided intervals: ratios that sum to 1 only to within a rounding
    (0.9999999999999999 here; dividing them by their sum changes them) are kept as decided, in one family order, so the
    replay's schedule and samples equal the original's exactly."""
    from nemo_mlsl.data.schedule import adaptive_start

    decided = {"amber": 0.29224895506176285, "cobalt": 0.45492494425159063, "jade": 0.25282610068664646}
    assert sum(decided.values()) != 1.0 and [v / sum(decided.values()) for v in decided.values()] != list(decided.values())
    cfg = BlendConfig({}, "natural", 64, 7, 100.0)

    def run(ratios):
        s = adaptive_start(Manifest.load(synth_data), cfg, {"amber": 0.5, "cobalt": 0.5}, 4, 12, GBS)
        s.build(2)
        s.extend(ratios, 8, "ado", {})
        return s

    original = run(decided)
    replay = run(original.schedule.to_dict()["intervals"][1]["ratios"])
    assert original.schedule.intervals[1].ratios == decided
    assert replay.schedule.to_dict() == original.schedule.to_dict()
    assert replay.interval_blends[1].family_ratios == original.interval_blends[1].family_ratios
    assert np.array_equal(replay.built.train.dataset_index, original.built.train.dataset_index)
    with pytest.raises(ConfigError, match="unknown family 'ruby'"):
        original.extend({"amber": 0.5, "ruby": 0.5}, 12, "ado", {})


@pytest.mark.parametrize("spec, steps, message", [
    ({"intervals": [{"until_step": 8, "ratios": {"amber": 1}}, {"until_step": 5, "ratios": {"amber": 1}}]}, 5,
     r"intervals\[1\]\.until_step = 5 is before the interval's start \(step 8.*boundaries must increase"),
    ({"intervals": [{"until_step": 8, "ratios": {"amber": 1}}, {"until_step": 8, "ratios": {"amber": 1}}, {"ratios": {"amber": 1}}]}, 10,
     r"intervals\[1\]\.until_step = 8 leaves interval 1 without steps.*at least one step, i\.e\. one global batch"),
    ({"intervals": [{"until_step": 0, "ratios": {"amber": 1}}, {"ratios": {"amber": 1}}]}, 10,
     r"intervals\[0\]\.until_step = 0 leaves interval 0 without steps"),
    ({"intervals": [{"ratios": {"amber": 1}}, {"until_step": 9, "ratios": {"amber": 1}}]}, 9,
     r"intervals\[0\]\.until_step is missing; only the last interval may leave it out"),
    ({"intervals": [{"until_step": 4, "ratios": {"amber": 1}}, {"until_step": 9, "ratios": {"amber": 1}}]}, 12,
     r"intervals\[1\]\.until_step = 9, but the run trains 12 steps.*make the last interval end at step 12"),
    ({"intervals": [{"until_step": 4, "ratio": {"amber": 1}}]}, 4, r"intervals\[0\]: unknown field\(s\) \['ratio'\]"),
    ({"intervals": [{"until_step": "soon", "ratios": {"amber": 1}}]}, 4, r"intervals\[0\]\.until_step = 'soon' must be an integer"),
    ({"intervals": [{"until_step": 4, "ratios": {"amber": "lots"}}]}, 4, r"intervals\[0\]\.ratios\['amber'\] = 'lots' must be a number"),
    ({"intervals": []}, 4, r"has no intervals; expected intervals: \["),
    ({"phases": []}, 4, r"unknown field\(s\) \['phases'\]"),
])
def test_bad_schedule_shapes_are_refused_by_name(spec, steps, message):
    with pytest.raises(ConfigError, match=message):
        MixtureSchedule.from_dict(spec, steps)


def test_bad_ratios_and_data_caps_are_refused_by_interval(synth_data, monkeypatch):
    two = lambda r0, r1: {"intervals": [{"until_step": 4, "ratios": r0}, {"ratios": r1}]}  # noqa: E731
    ok = {"amber": 0.5, "cobalt": 0.5}
    with pytest.raises(ConfigError, match=r"schedule intervals\[1\]\.ratios \(steps 4-8\): ratios sum to 0.9, not 1.*--normalize"):
        scheduled(synth_data, two(ok, {"amber": 0.5, "cobalt": 0.4}), steps=8)
    assert scheduled(synth_data, two(ok, {"amber": 0.5, "cobalt": 0.4}), steps=8, normalize=True).interval_blends[1].family_ratios["cobalt"] == pytest.approx(4 / 9)
    with pytest.raises(ConfigError, match=r"schedule intervals\[0\]\.ratios \(steps 0-4\): unknown family 'omega'"):
        scheduled(synth_data, two({"omega": 1.0}, ok), steps=8)
    m = Manifest.load(synth_data)
    orig = Manifest.family_tokens
    monkeypatch.setattr(Manifest, "family_tokens", lambda self, split="train": {**orig(self, split), "jade": 0})
    with pytest.raises(ConfigError, match=r"intervals\[1\]\.ratios \(steps 4-8\): family 'jade' has ratio > 0 but no training tokens"):
        scheduled(synth_data, two(ok, {"jade": 1.0}), steps=8)
    monkeypatch.undo()
    # the caps hold over the whole schedule: each interval alone stays under them, the run as a whole does not
    tokens = m.family_tokens("train")["amber"]
    steps = 40
    cap = 1.5 * (steps // 2) * GBS * 64 / tokens  # one interval of amber=1 draws 2/3 of the cap; both draw 4/3
    spec = two({"amber": 1.0}, {"amber": 1.0})
    spec["intervals"][0]["until_step"] = steps // 2
    with pytest.raises(ConfigError, match=r"schedule: over the whole schedule.*family 'amber' would repeat its data"):
        scheduled(synth_data, spec, steps=steps, max_epochs=cap).check_epochs()
    for blend in scheduled(synth_data, spec, steps=steps, max_epochs=cap).interval_blends:
        blend.check_epochs((steps // 2) * GBS)  # each interval alone is within the cap


# ---- the CPU training path ------------------------------------------------------------------------------------------

RUN = {"intervals": [
    {"until_step": 3, "ratios": {"amber": 0.75, "cobalt": 0.125, "jade": 0.125}},
    {"until_step": 7, "ratios": {"amber": 0.125, "cobalt": 0.75, "jade": 0.125}},
    {"ratios": {"amber": 0.125, "cobalt": 0.125, "jade": 0.75}},
]}


class Recorder(pl.Callback):
    """Each step's batch: its dataset ids and the first tokens of its samples (the sample ids, in effect)."""

    def __init__(self, stop_at=None):
        self.seen, self.stop_at = {}, stop_at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.global_step, []).append((batch["dataset_id"].tolist(), batch["tokens"][:, :6].tolist()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            raise KeyboardInterrupt


def test_resume_inside_the_second_interval_reads_the_same_samples(synth_data, tmp_path):
    sched = tmp_path / "schedule.yaml"
    sched.write_text("intervals:\n" + "".join(f"  - {json.dumps(iv)}\n" for iv in RUN["intervals"]))
    kw = dict(max_steps=10, overrides=["train.val_every=2"], progress=False, seed=5, schedule=str(sched))
    full = Recorder()
    ref = train(TrainRequest("cpu_100k", str(synth_data), None, str(tmp_path / "full"), extra_callbacks=[full], **kw))
    cut = Recorder(stop_at=5)
    with pytest.raises((KeyboardInterrupt, RuntimeError, SystemExit)):
        train(TrainRequest("cpu_100k", str(synth_data), None, str(tmp_path / "cut"), extra_callbacks=[cut], **kw))
    assert not (tmp_path / "cut" / "result.json").exists()
    # another schedule is refused on resume, by the run directory's schedule.json
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"intervals": [{**RUN["intervals"][0], "until_step": 4}, *RUN["intervals"][1:]]}))
    with pytest.raises(ConfigError, match="schedule.json holds another mixture schedule"):
        train(TrainRequest("cpu_100k", str(synth_data), None, str(tmp_path / "cut"), resume=True, **{**kw, "schedule": str(other)}))
    second = Recorder()
    res = train(TrainRequest("cpu_100k", str(synth_data), None, str(tmp_path / "cut"), resume=True, extra_callbacks=[second], **kw))
    assert min(second.seen) == 4  # resumed from the step-4 checkpoint: inside the second interval (steps 3-7)
    assert sorted(second.seen) == list(range(4, 10))
    for step, batches in second.seen.items():
        assert batches == full.seen[step], step
    assert sorted(full.seen) == list(range(10))
    # the ids follow the schedule: interval k's batches come from its families
    fams = sorted(Manifest.load(synth_data).families)
    assert res["steps"] == 10 and res["schedule"] == ref["schedule"]
    for k, iv in enumerate(res["schedule"]["intervals"]):
        assert (iv["start_step"], iv["until_step"], iv["reason"]) == ((0, 3, 7)[k], (3, 7, 10)[k], "fixed")
        for fam in fams:
            assert iv["realized"][fam] == pytest.approx(iv["ratios"][fam], abs=2 / (iv["until_step"] - iv["start_step"]) / 8)
    # the record's ratios: each family's share of the whole run
    assert res["ratios"] == pytest.approx({"amber": (0.75 * 3 + 0.125 * 7) / 10, "cobalt": (0.75 * 4 + 0.125 * 6) / 10,
                                            "jade": (0.75 * 3 + 0.125 * 7) / 10})
    # written with the run and with its checkpoints
    on_disk = json.loads((tmp_path / "cut" / "schedule.json").read_text())
    assert on_disk == MixtureSchedule.from_dict(RUN, 10).to_dict()
    import torch

    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["FamilyBlendDataModule"]["schedule"] == on_disk
    # metrics.jsonl carries the ratios that trained up to each validation
    lines = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [(l["step"], l["ratios"]["amber"]) for l in lines] == [(2, 0.75), (4, 0.125), (6, 0.125), (8, 0.125), (10, 0.125)]
    assert [l["ratios"]["jade"] for l in lines] == [0.125, 0.125, 0.125, 0.75, 0.75]
    # TensorBoard: every family's ratio at every boundary
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "full" / "tb"))
    acc.Reload()
    for fam in fams:
        events = acc.Scalars(f"schedule/{fam}/ratio")
        assert [(e.step, e.value) for e in events] == [(iv["start_step"], iv["ratios"][fam]) for iv in ref["schedule"]["intervals"]]


def test_the_cli_trains_a_schedule_and_refuses_bad_ones_in_one_line(synth_data, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("intervals:\n  - {until_step: 2, ratios: {amber: 1}}\n  - {ratios: {cobalt: 0.5, jade: 0.5}}\n")
    out = tmp_path / "run"
    proc = run_cli("train", "--recipe", "cpu_15k", "--data", synth_data, "--schedule", good, "--out", out, "--max-steps", "4",
                   "--law", "none", "--no-progress", "train.val_every=4")
    assert "steps 0-2 (fixed): target/realized amber 1.0000/1.0000  cobalt 0.0000/0.0000  jade 0.0000/0.0000" in proc.stdout
    assert "steps 2-4 (fixed): target/realized amber 0.0000/0.0000  cobalt 0.5000/0.5000  jade 0.5000/0.5000" in proc.stdout
    assert json.loads((out / "result.json").read_text())["schedule"]["intervals"][1]["ratios"] == {"cobalt": 0.5, "jade": 0.5}
    bad = tmp_path / "bad.yaml"
    bad.write_text("intervals:\n  - {until_step: 3, ratios: {amber: 1}}\n  - {until_step: 2, ratios: {amber: 1}}\n")
    for args, message in [
        (["--schedule", bad], f"--schedule '{bad}': intervals[1].until_step = 2 is before the interval's start (step 3"),
        (["--schedule", good, "--ratios", "amber=1"], "give the run's family ratios (--ratios fam=p,...) or a mixture schedule (--schedule FILE), not both"),
        ([], "or a mixture schedule (--schedule FILE), one of them"),
        (["--schedule", tmp_path / "nope.yaml"], f"--schedule '{tmp_path / 'nope.yaml'}' does not exist"),
    ]:
        proc = run_cli("train", "--recipe", "cpu_15k", "--data", synth_data, "--out", tmp_path / "x", "--max-steps", "4",
                       "--law", "none", "--no-progress", *args, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
        assert lines[0].startswith("mlsl train: error: ")


def test_a_backend_that_cannot_train_a_schedule_refuses_it_by_name(synth_data, tmp_path, monkeypatch, capsys):
    import nemo_mlsl.cli.train as cli_train
    from nemo_mlsl.backends import BackendPlugin
    from nemo_mlsl.cli import main

    trained = []
    plain = BackendPlugin(name="plain", runs_label="runs", study=lambda g, n: None, train=trained.append)
    real = cli_train.backend
    monkeypatch.setattr(cli_train, "backend", lambda name, check=True: plain if name == "nemo" else real(name, check))
    sched = tmp_path / "s.yaml"
    sched.write_text("intervals:\n  - {ratios: {amber: 1}}\n")
    argv = ["train", "--backend", "nemo", "--recipe", "cpu_15k", "--data", str(synth_data), "--out", str(tmp_path / "r"),
            "--law", "none"]
    assert main([*argv, "--schedule", str(sched)]) == 2 and not trained
    assert "--backend nemo does not train a mixture schedule yet; --schedule trains on: bridge, cpu (or give --ratios)" in capsys.readouterr().err
    assert main([*argv, "--ratios", "amber=1", "--adaptive", "ado"]) == 2 and not trained
    assert "--backend nemo does not train an adaptive mixture yet; --adaptive trains on: bridge, cpu (or give --ratios)" in capsys.readouterr().err
    assert main([*argv, "--ratios", "amber=1"]) == 0 and len(trained) == 1  # --ratios still reaches it


def test_mlsl_blend_audits_a_schedule_per_interval(synth_data, tmp_path, capsys):
    from nemo_mlsl.cli import main

    sched = tmp_path / "s.yaml"
    sched.write_text("intervals:\n  - {until_step: 2, ratios: {amber: 0.5, cobalt: 0.5}}\n  - {ratios: {jade: 1}}\n")
    argv = ["blend", "--data", str(synth_data), "--schedule", str(sched), "--seq-length", "64", "--global-batch-size", "8"]
    assert main([*argv, "--samples", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(iv["start_step"], iv["until_step"]) for iv in out["intervals"]] == [(0, 2), (2, 5)]
    assert {f: a["samples"] for f, a in out["intervals"][0]["families"].items()} == {"amber": 8, "cobalt": 8, "jade": 0}
    assert {f: a["samples"] for f, a in out["intervals"][1]["families"].items()} == {"amber": 0, "cobalt": 0, "jade": 24}
    assert out["whole"]["families"]["jade"]["target"] == pytest.approx(0.6)
    assert main([*argv, "--samples", "44"]) == 2
    assert "--samples 44 is not a whole number of global batches of 8" in capsys.readouterr().err
    assert main([*argv, "--samples", "40", "--ratios", "amber=1"]) == 2
    assert "give --ratios or --schedule, not both" in capsys.readouterr().err


def test_an_adaptive_run_decides_each_interval_and_resumes_to_the_same_samples(synth_data, tmp_path):
    ratios = {"amber": 0.5, "cobalt": 0.3, "jade": 0.2}
    kw = dict(max_steps=18, overrides=["train.val_every=2", "train.val_samples_per_language=8"], progress=False, seed=3,
              adaptive="ado", interval=6, min_share=0.1, smoothing=0.25)
    full = Recorder()
    ref = train(TrainRequest("cpu_100k", str(synth_data), ratios, str(tmp_path / "full"), extra_callbacks=[full], **kw))
    ivs = ref["schedule"]["intervals"]
    assert [(iv["start_step"], iv["until_step"], iv["reason"]) for iv in ivs] == [(0, 6, "initial"), (6, 12, "ado"), (12, 18, "ado")]
    for iv in ivs[1:]:
        ev = iv["evidence"]
        assert ev["policy"] == "ado" and set(ev["fits"]) == set(ratios) and ev["at_step"] == iv["start_step"]
        assert sum(iv["ratios"].values()) == pytest.approx(1) and min(iv["ratios"].values()) >= 0.1 - 1e-9
        assert ev["raw"] != ratios  # decided from the fits, not copied
        for fam in ratios:  # each decided interval realises its shares exactly
            assert abs(iv["realized"][fam] - iv["ratios"][fam]) <= 2 / 48
    assert ivs[1]["ratios"] != ratios and json.loads((tmp_path / "full" / "schedule.json").read_text())["intervals"][2]["reason"] == "ado"
    timing = {k: ref["adaptive"].pop(k) for k in ("decisions", "decision_s")}
    assert ref["adaptive"] == {"policy": "ado", "interval": 6, "min_share": 0.1, "smoothing": 0.25, "max_change": 1.0}
    assert timing["decisions"] == 2 and timing["decision_s"] > 0  # the policy's own cost (benchmarks/adaptive.py)
    for stop, resumed_at in ((9, 8), (7, 6)):  # inside the second interval; at its boundary, before the checkpoint held its decision
        out = tmp_path / f"cut{stop}"
        with pytest.raises((KeyboardInterrupt, RuntimeError, SystemExit)):
            train(TrainRequest("cpu_100k", str(synth_data), ratios, str(out), extra_callbacks=[Recorder(stop_at=stop)], **kw))
        again = Recorder()
        res = train(TrainRequest("cpu_100k", str(synth_data), ratios, str(out), resume=True, extra_callbacks=[again], **kw))
        assert min(again.seen) == resumed_at and sorted(again.seen) == list(range(resumed_at, 18))
        for step, batches in again.seen.items():
            assert batches == full.seen[step], (stop, step)
        assert [iv["ratios"] for iv in res["schedule"]["intervals"]] == [iv["ratios"] for iv in ivs]
    with pytest.raises(ConfigError, match="--adaptive needs --interval"):
        train(TrainRequest("cpu_100k", str(synth_data), ratios, str(tmp_path / "x"), **{**kw, "interval": None}))
    with pytest.raises(ConfigError, match="unknown policy 'nosuch'"):
        train(TrainRequest("cpu_100k", str(synth_data), ratios, str(tmp_path / "x"), **{**kw, "adaptive": "nosuch"}))


def test_the_law_policy_runs_through_the_cli_within_its_step_limit_and_for_the_remaining_budget(synth_data, tmp_path):
    """``mlsl train --adaptive law --max-change``: every decision sees the run's remaining tokens, records the optimum
    of its fitted curves, and moves the mixture by at most the step limit (total variation)."""
    out = tmp_path / "law"
    run_cli("train", "--recipe", "cpu_15k", "--data", synth_data, "--ratios", "amber=0.5,cobalt=0.3,jade=0.2", "--out", out,
            "--max-steps", "12", "--adaptive", "law", "--interval", "4", "--max-change", "0.05", "--smoothing", "0",
            "--min-share", "0.1", "--law", "none", "--no-progress", "train.val_every=1", "train.val_samples_per_language=8")
    res = json.loads((out / "result.json").read_text())
    per_step = res["D"] / res["steps"]
    ivs = res["schedule"]["intervals"]
    assert [(iv["start_step"], iv["reason"]) for iv in ivs] == [(0, "initial"), (4, "law"), (8, "law")]
    assert res["adaptive"]["policy"] == "law" and res["adaptive"]["max_change"] == 0.05
    for before, iv in zip(ivs, ivs[1:]):
        ev = iv["evidence"]
        assert ev["remaining_tokens"] == (12 - iv["start_step"]) * per_step
        assert set(ev["optimum"]) == {"amber", "cobalt", "jade"} and min(iv["ratios"].values()) >= 0.1 - 1e-9
        tv = 0.5 * sum(abs(iv["ratios"][f] - before["ratios"][f]) for f in iv["ratios"])
        tv_opt = 0.5 * sum(abs(ev["optimum"][f] - before["ratios"][f]) for f in iv["ratios"])
        assert tv == pytest.approx(min(0.05, tv_opt), abs=1e-9)
    proc = run_cli("train", "--recipe", "cpu_15k", "--data", synth_data, "--ratios", "amber=1", "--out", tmp_path / "x",
                   "--max-steps", "4", "--adaptive", "law", "--interval", "2", "--max-change", "0", "--law", "none",
                   "--no-progress", check=False)
    assert proc.returncode == 2 and "--max-change must be in (0, 1]" in proc.stderr

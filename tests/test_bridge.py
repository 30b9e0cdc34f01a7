"""The Megatron-Bridge backend, on a CPU, in the Bridge environment (``make test-bridge``).

Driven through Bridge's own entry points: ``ConfigContainer`` built and validated by Bridge's runtime update,
a YAML round trip through Bridge's loader, datasets and iterators from Bridge's dataset provider and loaders,
and per-language validation through Bridge's real ``evaluate()`` (its reduction over microbatches and the
data-parallel all-reduce on two gloo ranks) with only the model call stood in.
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from conftest import have_bridge, run_cli

if not have_bridge():
    if os.environ.get("MLSL_REQUIRE_BRIDGE"):
        raise RuntimeError("MLSL_REQUIRE_BRIDGE is set but megatron.bridge does not import: run `make setup-bridge`")
    pytest.skip("Megatron-Bridge lives in its own Python 3.12 environment: `make test-bridge` runs these tests",
                allow_module_level=True)

from mlsl_bridge.compat import ensure_importable  # noqa: E402

ensure_importable()  # first: megatron.bridge imports without TransformerEngine
import torch  # noqa: E402

from bridge_harness import direct_sums, dp_worker, load_ranks  # noqa: E402
from nemo_mlsl.data.blend import BlendConfig, FamilyBlend  # noqa: E402
from nemo_mlsl.data.manifest import Manifest  # noqa: E402
from nemo_mlsl.errors import ConfigError  # noqa: E402
from nemo_mlsl.metrics import family_metrics  # noqa: E402
from nemo_mlsl.recipes import available, load  # noqa: E402

RATIOS = {"amber": 0.5, "cobalt": 0.3, "jade": 0.2}
SMALL = ["train.global_batch_size=8", "train.micro_batch_size=2", "train.val_samples_per_language=4"]


def _request(data, tmp_path, **kw):
    from mlsl_bridge.train import BridgeRequest

    args = dict(recipe="cpu_15k", data=str(data), ratios=RATIOS, out=str(tmp_path / "run"), max_steps=3, overrides=SMALL,
                run_id="r0")
    args.update(kw)
    return BridgeRequest(**args)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- configuration ---------------------------------------------------------------------------------------


def test_every_rung_builds_and_bridge_validates_it():
    from mlsl_bridge.recipe import bridge_run, validated

    for rung in available():
        run = bridge_run(rung, None, None)
        recipe = load(rung)
        p = recipe.parallel
        checked = validated(run.config, p.num_nodes * p.gpus_per_node)
        m = checked.model
        assert (m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads, m.kv_channels) == (
            recipe.model.num_layers, recipe.model.hidden_size, recipe.model.ffn_hidden_size, recipe.model.num_attention_heads,
            recipe.model.head_dim), rung
        assert (m.tensor_model_parallel_size, m.pipeline_model_parallel_size) == (p.tensor_model_parallel_size,
                                                                                  p.pipeline_model_parallel_size)
        assert checked.train.train_iters == recipe.train.resolved_max_steps
        assert checked.data_parallel_size == p.num_nodes * p.gpus_per_node // (
            p.tensor_model_parallel_size * p.pipeline_model_parallel_size * p.context_parallel_size)
        assert run.config.mixed_precision == "bf16_mixed"  # the built config is untouched by validation


def test_config_carries_the_blend_tokenizer_schedule_and_round_trips_yaml(synth_data, tmp_path):
    from megatron.bridge.training.config import ConfigContainer

    from mlsl_bridge.recipe import bridge_run, validated

    run = bridge_run("atlas_s00", str(synth_data), RATIOS, dir=str(tmp_path / "r"), check_epochs=False,
                     overrides=["train.max_steps=200", "train.decay_fraction=0.25"])
    cfg = validated(run.config, 8)
    blend = FamilyBlend(Manifest.load(synth_data), BlendConfig(RATIOS))
    (train_prefixes, train_weights), (val_prefixes, val_weights), test = cfg.dataset.blend_per_split
    assert [str(p) for p in train_prefixes] == [prefix for _, prefix, _ in blend.train_parts]
    assert np.allclose(train_weights, [w for _, _, w in blend.train_parts])
    assert len(val_prefixes) == len(blend.validation_languages) and set(val_weights) == {1.0}
    assert [p.rsplit("/", 1)[1] for p in val_prefixes] == blend.validation_languages and list(test) == [val_prefixes, val_weights]
    assert cfg.dataset.split is None and cfg.dataset.path_to_cache == str(synth_data / ".cache")
    assert cfg.tokenizer.tokenizer_type == "SentencePieceTokenizer" and cfg.tokenizer.tokenizer_model == str(synth_data / "tokenizer.model")
    assert (cfg.scheduler.lr_decay_style, cfg.scheduler.lr_wsd_decay_iters, cfg.scheduler.lr_decay_iters) == ("WSD", 50, 200)
    assert cfg.logger.tensorboard_dir == str(tmp_path / "r" / "tb")
    path = tmp_path / "config.yaml"
    cfg.to_yaml(str(path))
    again = ConfigContainer.from_yaml(str(path))
    assert again.dataset.blend_per_split == cfg.dataset.blend_per_split
    assert (again.model.num_layers, again.model.hidden_size, again.train.train_iters) == (3, 128, 200)


def test_bad_input_is_a_named_error(synth_data):
    from mlsl_bridge.recipe import bridge_run, validated

    with pytest.raises(ConfigError, match="exceeds|epochs"):
        bridge_run("atlas_s00", str(synth_data), RATIOS)  # 30,000 steps x 256 x 2048 tokens: far past 4 epochs
    run = bridge_run("cpu_15k", str(synth_data), RATIOS, check_epochs=False)
    with pytest.raises(ConfigError, match="Megatron-Bridge rejected the config for 3 GPU"):
        validated(run.config, 3)  # a batch of 8 does not split over 3 data-parallel ranks


# -- the blend, through Bridge's own dataset provider -------------------------------------------------


def test_blend_built_by_bridge_carries_dataset_id_in_our_language_order(synth_data, tmp_path):
    from megatron.bridge.data.utils import get_dataset_provider
    from megatron.bridge.training.tokenizers.tokenizer import build_tokenizer

    from mlsl_bridge.recipe import bridge_run
    from nemo_mlsl.data.blend import one_process_group
    from nemo_mlsl.data.indexed import IndexedData

    run = bridge_run("cpu_15k", str(synth_data), RATIOS, check_epochs=False, overrides=SMALL, validate=False)
    cfg = run.config
    cfg.dataset.finalize()
    cfg.dataset.tokenizer = build_tokenizer(cfg.tokenizer)
    with one_process_group():
        train, valid, _ = get_dataset_provider(cfg.dataset)([400, 6 * 40, 0], cfg.dataset)
    m = Manifest.load(synth_data)
    langs = run.blend["validation_languages"]
    counts = np.bincount(np.asarray(valid.dataset_index), minlength=len(langs))
    assert counts.min() == counts.max() == 40  # every language equally
    for i in range(0, 240, 37):  # a validation sample's tokens come from the language its dataset_id names
        sample = valid[i]
        lang = langs[int(sample["dataset_id"])]
        docs = IndexedData.open(m.root / m.prefix(lang, "validation"))
        stream = np.concatenate([docs.document(j) for j in range(docs.documents)])
        head = sample["tokens"][:8].numpy()
        assert any(np.array_equal(stream[k:k + 8], head) for k in range(len(stream) - 8)), (i, lang)
    realized = np.bincount(np.asarray(train.dataset_index), minlength=len(run.blend["train_languages"])) / len(train)
    weights = np.array([w for w in run.blend["paths"]["train"][0::2]])
    assert np.abs(realized - weights / weights.sum()).max() < 0.01
    # what the callback reports as drawn after n samples is exactly the first n entries of Bridge's own blend
    from nemo_mlsl.data.blend import blended_counts

    for n in (1, 37, 400):
        assert blended_counts(weights, n).tolist() == np.bincount(np.asarray(train.dataset_index[:n]),
                                                                  minlength=len(weights)).tolist()


# -- per-language validation through Bridge's evaluate() ------------------------------------------------


def test_language_sums_reduced_by_bridge_over_two_data_parallel_ranks_equal_a_direct_computation(synth_data, tmp_path):
    from mlsl_bridge.forward_step import language_sums

    store = tmp_path / "study" / "results.jsonl"
    # the fixed set (4 samples x 6 languages) in global batches of 20: the second batch is 16 loss-masked padding samples
    over = ["train.global_batch_size=20", "train.micro_batch_size=2", "train.val_samples_per_language=4"]
    req = _request(synth_data, tmp_path, store=str(store), law=None, extra_record={"purpose": "design"},
                   tb_root=str(tmp_path / "tb"), overrides=over)
    out = tmp_path / "ranks"
    torch.multiprocessing.spawn(dp_worker, args=(2, _free_port(), req, str(out)), nprocs=2, join=True)
    ranks = load_ranks(out, 2)
    langs, family_of, bpt = ranks[0]["languages"], ranks[0]["family_of"], ranks[0]["bytes_per_token"]
    # the truth: every batch either rank evaluated, summed straight from the tokens
    batches = ranks[0]["batches"] + ranks[1]["batches"]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 2 * 5  # eval_iters 2 x (20 / (2 x DP 2)) microbatches
    direct = direct_sums(batches, len(langs))
    assert direct[:, 1].tolist() == [4 * 128] * len(langs)  # every language's 4 samples, no padding counted
    want = family_metrics(direct, langs, family_of, bpt)
    for res in ranks:  # both ranks sit on the last (only) pipeline stage: both see the all-reduced entries
        sums = language_sums(res["total"], langs)
        assert np.allclose(sums[:, 1] / sums[:, 1].sum(), direct[:, 1] / direct[:, 1].sum(), rtol=1e-6)  # token shares
        got = family_metrics(sums, langs, family_of, bpt)
        for kind in ("families", "languages"):
            for name, m in want[kind].items():
                assert math.isclose(got[kind][name]["loss"], m["loss"], rel_tol=1e-5), (kind, name)
                assert math.isclose(got[kind][name]["bpb"], m["bpb"], rel_tol=1e-5), (kind, name)
                assert math.isclose(res["last"][kind][name]["loss"], m["loss"], rel_tol=1e-5)
        # Bridge's own validation loss is untouched: the token-weighted mean over everything
        assert math.isclose(res["total"]["lm loss"], direct[:, 0].sum() / direct[:, 1].sum(), rel_tol=1e-5)
    # the record: once, from the last rank, with the other backends' fields
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert len(records) == 1 and ranks[1]["record"] is not None and ranks[0]["record"] is None
    rec = records[0]
    assert rec["backend"] == "bridge" and rec["run_id"] == "r0" and rec["purpose"] == "design"
    assert rec["D"] == 3 * 20 * 128 and rec["steps"] == 3 and rec["transformer_impl"] == "local"
    assert set(rec["realized_ratios"]) == set(RATIOS) and math.isclose(sum(rec["realized_ratios"].values()), 1.0)
    assert set(rec["family_loss"]) == set(RATIOS) and set(rec["language_loss"]) == set(langs)
    assert math.isclose(rec["family_loss"]["amber"], want["families"]["amber"]["loss"], rel_tol=1e-5)
    # TensorBoard, under the same names as the CPU and NeMo paths, on Bridge's writer (the last rank's)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb" / "r0"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {f"val_family/{f}/{m}" for f in RATIOS for m in ("loss", "bpb", "ppl")} <= tags
    assert {f"val_language/{l}/loss" for l in langs} <= tags and {f"mixture/{f}/ratio" for f in RATIOS} <= tags
    assert math.isclose(acc.Scalars("val_family/jade/loss")[-1].value, want["families"]["jade"]["loss"], rel_tol=1e-5)


def test_one_validation_language(tmp_path, lopsided_data):
    """A one-language validation set: every sample is language 0, and its loss is the token-weighted mean."""
    import shutil

    from mlsl_bridge.forward_step import language_sums

    data = tmp_path / "one"
    shutil.copytree(lopsided_data, data)
    manifest = json.loads((data / "manifest.json").read_text())
    keep = sorted(manifest["languages"])[0]
    fam = manifest["languages"][keep]["family"]
    manifest["languages"] = {keep: manifest["languages"][keep]}
    manifest["families"] = {fam: [keep]}
    (data / "manifest.json").write_text(json.dumps(manifest))
    req = _request(data, tmp_path, ratios={fam: 1.0})
    torch.multiprocessing.spawn(dp_worker, args=(1, _free_port(), req, str(tmp_path / "ranks")), nprocs=1, join=True)
    res = load_ranks(tmp_path / "ranks", 1)[0]
    direct = direct_sums(res["batches"], 1)
    assert all(int(b["dataset_id"].max()) == 0 for b in res["batches"])
    got = language_sums(res["total"], [keep])
    assert math.isclose(got[0, 0] / got[0, 1], direct[0, 0] / direct[0, 1], rel_tol=1e-5)
    assert math.isclose(res["last"]["families"][fam]["loss"], direct[0, 0] / direct[0, 1], rel_tol=1e-5)


@pytest.mark.parametrize("dp", [1, 2])
def test_pipeline_parallel_evaluation_through_bridge_equals_a_direct_computation(synth_data, tmp_path, dp):
    """PP = 2 (x DP = dp) through Bridge's evaluate() and megatron's pipeline schedule over gloo: the first stage reads
    tokens and sends hidden states, the last reads labels and loss mask and computes the loss. Only the last stage
    reports per-language entries, Bridge reduces them over its data-parallel ranks, and every family and language
    loss equals a direct float64 computation from the batches the last stage consumed."""
    from mlsl_bridge.forward_step import language_sums

    over = ["model.num_layers=2", f"parallel.pipeline_model_parallel_size=2", f"parallel.gpus_per_node={2 * dp}",
            "train.global_batch_size=20", "train.micro_batch_size=2", "train.val_samples_per_language=4"]
    store = tmp_path / "results.jsonl"
    req = _request(synth_data, tmp_path, overrides=over, store=str(store), law=None)
    out = tmp_path / "ranks"
    world = 2 * dp
    torch.multiprocessing.spawn(dp_worker, args=(world, _free_port(), req, str(out), 2), nprocs=world, join=True)
    ranks = load_ranks(out, world)
    last = [r for r in ranks if r["stage"][0] == 1]
    first = [r for r in ranks if r["stage"][0] == 0]
    assert len(last) == len(first) == dp
    langs, family_of, bpt = ranks[0]["languages"], ranks[0]["family_of"], ranks[0]["bytes_per_token"]
    direct = direct_sums([b for r in last for b in r["batches"]], len(langs))
    assert direct[:, 1].tolist() == [4 * 128] * len(langs)
    # both stages of a data-parallel rank read the same microbatches (the first for tokens, the last for labels)
    for r in first:
        twin = next(x for x in last if x["stage"][1] == r["stage"][1])
        assert [b["tokens"].tolist() for b in r["batches"]] == [b["tokens"].tolist() for b in twin["batches"]]
        assert language_sums(r["total"], langs) is None and r["last"] is None  # no loss on the first stage
    want = family_metrics(direct, langs, family_of, bpt)
    for r in last:
        got = family_metrics(language_sums(r["total"], langs), langs, family_of, bpt)
        for kind in ("families", "languages"):
            for name, m in want[kind].items():
                assert math.isclose(got[kind][name]["loss"], m["loss"], rel_tol=1e-5), (kind, name)
                assert math.isclose(r["last"][kind][name]["bpb"], m["bpb"], rel_tol=1e-5), (kind, name)
        assert math.isclose(r["total"]["lm loss"], direct[:, 0].sum() / direct[:, 1].sum(), rel_tol=1e-5)
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert len(records) == 1 and math.isclose(records[0]["family_loss"]["amber"], want["families"]["amber"]["loss"], rel_tol=1e-5)


SCHEDULE = {"intervals": [{"until_step": 2, "ratios": {"amber": 0.7, "cobalt": 0.2, "jade": 0.1}},
                          {"until_step": 3, "ratios": {"amber": 0.1, "cobalt": 0.3, "jade": 0.6}},
                          {"ratios": {"cobalt": 0.5, "jade": 0.5}}]}


def test_a_mixture_schedule_is_what_bridges_training_iterators_deliver_interval_by_interval(synth_data, tmp_path):
    """A 3-interval schedule (5 steps, one of them a single global batch) on PP = 2 x DP = 2 gloo ranks: the training
    set is built by Bridge's own dataset provider from the run's ScheduledDataset, Bridge's data loaders shard it,
    and every training step runs megatron's pipeline schedule with the forward step over Bridge's training
    iterator. The samples each interval's steps delivered (their dataset_id, summed over the data-parallel ranks)
    are exactly what `mlsl blend --schedule` audits for that interval; validation is the fixed set, unchanged; the
    record carries the schedule with each interval's realised shares."""
    import yaml

    path = tmp_path / "curriculum.yaml"
    path.write_text(yaml.safe_dump(SCHEDULE))
    steps, gbs, mbs, dp = 5, 8, 2, 2
    over = ["model.num_layers=2", "parallel.pipeline_model_parallel_size=2", f"parallel.gpus_per_node={2 * dp}",
            f"train.global_batch_size={gbs}", f"train.micro_batch_size={mbs}", "train.val_samples_per_language=4"]
    store = tmp_path / "results.jsonl"
    req = _request(synth_data, tmp_path, ratios=None, schedule=str(path), max_steps=steps, overrides=over, store=str(store),
                   law=None)
    out = tmp_path / "ranks"
    world = 2 * dp
    torch.multiprocessing.spawn(dp_worker, args=(world, _free_port(), req, str(out), 2, 1, True), nprocs=world, join=True)
    ranks = load_ranks(out, world)
    audit = json.loads(run_cli("blend", "--data", synth_data, "--schedule", path, "--samples", str(steps * gbs),
                               "--global-batch-size", str(gbs), "--seq-length", "128", "--seed", "1234", "--json").stdout)
    from mlsl_bridge.train import build_run

    train_languages = build_run(req).run.scheduled.train_languages  # the run's table: what a dataset_id names
    per_step = gbs // (mbs * dp)  # microbatches per step on each data-parallel rank
    for stage in (0, 1):  # both pipeline stages read the same samples from their own iterators
        readers = [r for r in ranks if r["stage"][0] == stage]
        assert len(readers) == dp and all(len(r["train_batches"]) == steps * per_step for r in readers)
        for want in audit["intervals"]:
            lo, hi = want["start_step"] * per_step, want["until_step"] * per_step
            got = {lang: 0 for lang in want["languages"]}
            for r in readers:
                for b in r["train_batches"][lo:hi]:
                    for i in b["dataset_id"].tolist():
                        got[train_languages[i]] += 1
            assert got == {lang: a["samples"] for lang, a in want["languages"].items()}, (stage, lo)
            assert sum(got.values()) == (want["until_step"] - want["start_step"]) * gbs
    assert [(iv["start_step"], iv["until_step"]) for iv in audit["intervals"]] == [(0, 2), (2, 3), (3, 5)]
    # the validation set is the study's fixed one, unchanged by the schedule: every language's 4 samples
    last = [r for r in ranks if r["stage"][0] == 1]
    assert direct_sums([b for r in last for b in r["batches"]], 6)[:, 1].tolist() == [4 * 128] * 6
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert len(records) == 1
    rec = records[0]
    assert [iv["ratios"] for iv in rec["schedule"]["intervals"]] == [iv["ratios"] for iv in SCHEDULE["intervals"]]
    for iv, want in zip(rec["schedule"]["intervals"], audit["intervals"]):
        assert (iv["start_step"], iv["until_step"]) == (want["start_step"], want["until_step"])
        assert iv["realized"] == pytest.approx({f: a["realized"] for f, a in want["families"].items()}, abs=1e-12)
    assert rec["ratios"] == pytest.approx({"amber": 0.3, "cobalt": 0.34, "jade": 0.36})  # the steps-weighted mean
    assert rec["realized_ratios"] == pytest.approx({f: a["realized"] for f, a in audit["whole"]["families"].items()}, abs=1e-12)


def test_an_adaptive_run_decides_at_each_boundary_and_bridges_iterators_deliver_each_decided_interval(synth_data, tmp_path):
    """Three intervals of two steps on PP = 2 x DP = 2 gloo ranks, the second and third decided by the policy at steps 2
    and 4, in the order of Bridge's train(): each step's forward passes over Bridge's training iterator (its loader over
    the DecidedSamples of our dataset provider), Bridge's evaluate_and_print_results at every boundary with the family
    callback and then the adaptive one. Every rank decides the same schedule from the same (broadcast, reduced) losses;
    the samples each interval's steps delivered are exactly what `mlsl blend --schedule` audits for the decided schedule;
    schedule.json and adaptive_history.jsonl hold the decisions and the losses they read; the record carries the
    decided schedule, its mean ratios and the policy's settings."""
    from bridge_harness import FIXED_POLICY, PLAN, adaptive_worker

    steps, gbs, mbs, dp = 6, 8, 2, 2
    over = ["model.num_layers=2", "parallel.pipeline_model_parallel_size=2", f"parallel.gpus_per_node={2 * dp}",
            f"train.global_batch_size={gbs}", f"train.micro_batch_size={mbs}", "train.val_samples_per_language=4"]
    store = tmp_path / "results.jsonl"
    req = _request(synth_data, tmp_path, max_steps=steps, overrides=over, store=str(store), law=None,
                   adaptive={"policy": FIXED_POLICY, "interval": 2, "min_share": 0.0})
    out, world = tmp_path / "ranks", 2 * dp
    torch.multiprocessing.spawn(adaptive_worker, args=(world, _free_port(), req, str(out), 2), nprocs=world, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    saved = json.loads((tmp_path / "run" / "schedule.json").read_text())
    assert [(iv["start_step"], iv["until_step"], iv["reason"]) for iv in saved["intervals"]] == [
        (0, 2, "initial"), (2, 4, FIXED_POLICY), (4, 6, FIXED_POLICY)]
    assert saved["intervals"][0]["ratios"] == RATIOS
    for iv in saved["intervals"][1:]:
        assert iv["ratios"] == {**dict.fromkeys(RATIOS, 0.0), **PLAN[iv["start_step"]]}
    assert all(r["schedule"] == saved for r in ranks)  # one schedule on every rank, both pipeline stages
    history = [json.loads(line) for line in (tmp_path / "run" / "adaptive_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4, 6]  # written by rank 0, a first-stage rank: the broadcast losses
    assert all(r["losses"] == {str(h["step"]): h["family_loss"] for h in history} for r in ranks)
    for iv, h in zip(saved["intervals"][1:], history):
        ev = iv["evidence"]
        assert ev["step"] == h["step"] and ev["seen_loss"] == h["family_loss"] and ev["points"] == h["step"] // 2
        assert sum(ev["drawn"].values()) == h["step"] * gbs * 128 and ev["remaining"] == (steps - h["step"]) * gbs * 128
    (rec,) = [json.loads(line) for line in store.read_text().splitlines()]
    assert rec["family_loss"] == history[-1]["family_loss"]  # the last stage's own losses: the broadcast is exact

    audit = json.loads(run_cli("blend", "--data", synth_data, "--schedule", tmp_path / "run" / "schedule.json", "--samples",
                               str(steps * gbs), "--global-batch-size", str(gbs), "--seq-length", "128", "--seed", "1234",
                               "--json").stdout)
    per_step = gbs // (mbs * dp)
    for stage in (0, 1):  # both pipeline stages read the same samples from their own iterators
        readers = [r for r in ranks if r["stage"][0] == stage]
        assert len(readers) == dp and all(len(r["train_batches"]) == steps * per_step for r in readers)
        table = readers[0]["train_languages"]
        for want in audit["intervals"]:
            lo, hi = want["start_step"] * per_step, want["until_step"] * per_step
            got = {lang: 0 for lang in want["languages"]}
            for r in readers:
                for b in r["train_batches"][lo:hi]:
                    for i in b["dataset_id"]:
                        got[table[i]] += 1
            assert got == {lang: a["samples"] for lang, a in want["languages"].items()}, (stage, lo)
    assert rec["steps"] == steps and rec["backend"] == "bridge"
    mean = {f: (2 * RATIOS[f] + sum(2 * PLAN[b].get(f, 0.0) for b in PLAN)) / steps for f in RATIOS}
    assert rec["ratios"] == pytest.approx(mean, abs=1e-12)
    assert [iv["ratios"] for iv in rec["schedule"]["intervals"]] == [iv["ratios"] for iv in saved["intervals"]]
    for iv, want in zip(rec["schedule"]["intervals"], audit["intervals"]):
        assert iv["realized"] == pytest.approx({f: a["realized"] for f, a in want["families"].items()}, abs=1e-12)
    assert {k: v for k, v in rec["adaptive"].items() if k != "decision_s"} == {
        "policy": FIXED_POLICY, "interval": 2, "min_share": 0.0, "smoothing": 0.5, "max_change": 1.0, "decisions": 2}


def test_a_resumed_adaptive_bridge_run_reads_the_samples_and_makes_the_decisions_of_an_uninterrupted_one(synth_data, tmp_path,
                                                                                                       request):
    """PP = 2 gloo ranks, 8 steps, a decision every 2 from a policy that reads the whole history. Stopped after step 5
    (inside an interval decided at step 4: its checkpoint's adaptive state beside it) and resumed as Bridge resumes a run
    (its train state at step 5 before on_data_init_start and the data iterators): the training samples of the two
    attempts, in order, are the uninterrupted run's, and so is every decision, evidence included, and the record. A
    resume whose saved state is missing is refused by name."""
    from bridge_harness import HISTORY_POLICY, adaptive_worker

    steps, gbs, mbs = 8, 8, 2
    over = ["model.num_layers=2", "parallel.pipeline_model_parallel_size=2", "parallel.gpus_per_node=2",
            f"train.global_batch_size={gbs}", f"train.micro_batch_size={mbs}", "train.val_samples_per_language=4"]

    def attempt(name, out, **kw):
        req = _request(synth_data, tmp_path, out=str(tmp_path / out), max_steps=steps, overrides=over,
                       store=str(tmp_path / f"{out}.jsonl"), law=None,
                       adaptive={"policy": HISTORY_POLICY, "interval": 2, "min_share": 0.05})
        torch.multiprocessing.spawn(adaptive_worker, args=(2, _free_port(), req, str(tmp_path / name), 2,
                                                           kw.get("stop_at"), kw.get("resume_at")), nprocs=2, join=True)
        return [json.loads((tmp_path / name / f"rank{r}.json").read_text()) for r in range(2)]

    full = attempt("full", "whole")
    first = attempt("first", "cut", stop_at=5)
    saved = json.loads((tmp_path / "cut" / "adaptive_state" / "step_000000005.json").read_text())
    assert [iv["until_step"] for iv in saved["schedule"]["intervals"]] == [2, 4, 6] and sorted(saved["losses"]) == ["2", "4"]
    second = attempt("second", "cut", resume_at=5)
    for r in range(2):
        ids = [b["dataset_id"] for b in full[r]["train_batches"]]
        assert len(first[r]["train_batches"]) == 5 * 4 and len(second[r]["train_batches"]) == 3 * 4
        assert [b["dataset_id"] for b in first[r]["train_batches"] + second[r]["train_batches"]] == ids
        assert second[r]["schedule"] == full[r]["schedule"]
    whole = full[0]["schedule"]["intervals"]
    assert [iv["evidence"]["steps"] for iv in whole[1:]] == [[2], [2, 4], [2, 4, 6]]
    assert len({json.dumps(iv["ratios"], sort_keys=True) for iv in whole}) == 4  # every decision moved the ratios
    assert json.loads((tmp_path / "cut" / "schedule.json").read_text()) == full[0]["schedule"]
    (a,), (b,) = [[json.loads(line) for line in (tmp_path / f"{n}.jsonl").read_text().splitlines()] for n in ("whole", "cut")]
    assert a["schedule"] == b["schedule"] and a["ratios"] == b["ratios"] and a["family_loss"] == b["family_loss"]

    (tmp_path / "cut" / "adaptive_state" / "step_000000005.json").unlink()
    from types import SimpleNamespace

    from bridge_harness import register_fixed_policy
    from mlsl_bridge.train import build_run
    from nemo_mlsl.registry import POLICIES

    register_fixed_policy()  # in this process too
    request.addfinalizer(lambda: [POLICIES._extra.pop(n, None) for n in (HISTORY_POLICY, "bridge_test_fixed")])
    built = build_run(_request(synth_data, tmp_path, out=str(tmp_path / "cut"), max_steps=steps, overrides=over,
                               adaptive={"policy": HISTORY_POLICY, "interval": 2}))
    ctx = SimpleNamespace(state=SimpleNamespace(train_state=SimpleNamespace(step=5), tensorboard_logger=None,
                                                cfg=built.run.config))
    built.adaptive.on_data_init_start(ctx)
    with pytest.raises(ConfigError, match=r"resumes at step 5, but the intervals it can rebuild end at step 2: .*"
                                          r"step_000000005\.json .* is missing"):
        built.adaptive.on_train_start(ctx)


def test_an_adaptive_bridge_run_is_refused_by_name_where_it_cannot_be_honoured(synth_data, tmp_path):
    """Resumed past its first interval without the state saved with the checkpoint; an evaluation cadence that misses a
    boundary; a schedule besides --adaptive;
    bad settings; through the CLI as one line each (and a dry run prints the adaptive plan)."""
    from types import SimpleNamespace

    from mlsl_bridge.train import build_run

    req = lambda **kw: _request(synth_data, tmp_path, max_steps=6, adaptive={"policy": "ado", "interval": 2, **kw})  # noqa: E731
    built = build_run(req())
    assert built.run.config.dataset.num_workers == 0 and built.run.config.validation.eval_interval in (1, 2)
    assert built.run.scheduled.schedule.steps == 2 and built.callbacks[-1] is built.adaptive
    ctx = lambda step, every=2: SimpleNamespace(state=SimpleNamespace(  # noqa: E731
        train_state=SimpleNamespace(step=step), cfg=SimpleNamespace(validation=SimpleNamespace(eval_interval=every)),
        tensorboard_logger=None))
    with pytest.raises(ConfigError, match=r"resumes at step 3, but the intervals it can rebuild end at step 2.*new --out"):
        built.adaptive.on_train_start(ctx(3))
    with pytest.raises(ConfigError, match=r"eval_interval \(4\) must divide the interval \(2 steps\)"):
        built.adaptive.on_train_start(ctx(0, every=4))
    built.adaptive.on_train_start(ctx(2))  # at the first boundary: its decision is taken at that evaluation
    asynchronous = ctx(0)
    asynchronous.state.cfg.checkpoint = SimpleNamespace(async_save=True)
    with pytest.raises(ConfigError, match="checkpoint.async_save must be false"):
        built.adaptive.on_train_start(asynchronous)
    with pytest.raises(ConfigError, match="min_share must be in"):
        build_run(req(min_share=1.5))
    with pytest.raises(ConfigError, match="unknown policy 'nosuch'"):
        build_run(_request(synth_data, tmp_path, max_steps=6, adaptive={"policy": "nosuch", "interval": 2}))
    path = tmp_path / "s.yaml"
    path.write_text("intervals: [{ratios: {amber: 1.0}}]\n")
    with pytest.raises(ConfigError, match="give --ratios, not --schedule"):
        build_run(_request(synth_data, tmp_path, ratios=None, schedule=str(path), max_steps=6,
                           adaptive={"policy": "ado", "interval": 2}))
    proc = run_cli("train", "--backend", "bridge", "--recipe", "cpu_15k", "--data", synth_data, "--ratios", "amber=1",
                   "--adaptive", "ado", "--interval", "2", "--min-share", "2", "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "min_share must be in [0, 1)" in proc.stderr
    out = run_cli("recipes", "build", "cpu_15k", *SMALL, "--backend", "bridge", "--dry-run", "--data", synth_data,
                  "--ratios", "amber=0.5,cobalt=0.3,jade=0.2", "--adaptive", "ado", "--interval", "2").stdout
    assert "# adaptive mixture: policy ado, an interval every 2 steps" in out


def test_the_bridge_study_backend_takes_a_studys_adaptive_arm(synth_data, tmp_path):
    """A study's adaptive arm on the Bridge backend: in process, the request it builds is an adaptive run with the arm's
    settings (the dataset config, the callback, the first interval); as a job, its command line carries the same flags,
    and the CLI's own parser turns them back into the same run."""
    from mlsl_bridge.study import BridgeBackend
    from mlsl_bridge.train import build_run
    from nemo_mlsl.cli.common import adaptive_arg
    from nemo_mlsl.cli import build_parser
    from nemo_mlsl.study.backend import RunSpec
    from nemo_mlsl.study.plan import PlannedRun

    settings = {"policy": "ado", "interval": 2, "min_share": 0.05, "smoothing": 0.25}
    arm = PlannedRun("confirm-adaptive-s0", "confirm", "cpu_15k", 6 * 8 * 128, RATIOS, 1, 0, phase=2, mixture="adaptive:ado",
                     adaptive=settings)
    spec = RunSpec(arm, str(synth_data), str(tmp_path / "run"), str(tmp_path / "results.jsonl"), str(tmp_path / "tb"),
                   str(tmp_path / "fit"), overrides=tuple(SMALL), tags={"purpose": "confirm", "mixture": "adaptive:ado"})
    backend = BridgeBackend()
    assert backend.adaptive
    built = build_run(backend.request(spec))
    assert built.run.adaptive == {**settings, "max_change": 1.0} and built.adaptive is not None
    assert built.run.config.dataset.adaptive and built.run.scheduled.schedule.steps == 2
    a = build_parser().parse_args(backend.arguments(spec))
    assert adaptive_arg(a) == {**settings, "max_change": None} and a.backend == "bridge"
    from_cli = build_run(_request(synth_data, tmp_path, ratios=RATIOS, max_steps=6, adaptive=adaptive_arg(a)))
    assert from_cli.run.adaptive == built.run.adaptive


def test_a_bad_schedule_or_adaptive_run_is_refused_by_name(synth_data, tmp_path):
    import yaml

    from mlsl_bridge.train import build_run

    def refused(spec, match, **kw):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(ConfigError, match=match) as err:
            build_run(_request(synth_data, tmp_path, ratios=None, schedule=str(path), max_steps=5, **kw))
        assert "\n" not in str(err.value)

    ok = SCHEDULE["intervals"]
    refused({"intervals": [*ok[:2], {**ok[2], "until_step": 4}]},
            r"intervals\[2\]\.until_step = 4, but the run trains 5 steps")  # not train_iters
    refused({"intervals": [ok[0], {**ok[1], "until_step": 2}, ok[2]]}, r"intervals\[1\]\.until_step = 2 leaves interval 1 "
            "without steps.*one global batch")
    refused({"intervals": [ok[0], {"until_step": 3, "ratios": {"amber": 0.5, "ruby": 0.5}}, ok[2]]},
            r"intervals\[1\]\.ratios \(steps 2-3\).*ruby")  # a family without data
    with pytest.raises(ConfigError, match="--ratios .* or a mixture schedule .*not both"):
        build_run(_request(synth_data, tmp_path, schedule=str(tmp_path / "bad.yaml")))
    proc = run_cli("recipes", "build", "cpu_15k", "--backend", "bridge", "--dry-run", "--data", synth_data, "--ratios", "amber=1",
                   "--schedule", tmp_path / "bad.yaml", check=False)
    assert proc.returncode == 2 and "give --ratios or --schedule, not both" in proc.stderr


def test_runs_of_different_length_and_seed_validate_on_the_same_fixed_samples(synth_data, tmp_path):
    """Two runs (3 and 40 steps, seeds 1 and 5), each evaluated three times through Bridge's evaluate() with Bridge's
    own validation stream handed in: every evaluation of both runs reads the study's fixed validation set from its
    first sample, padded to whole global batches with loss-masked samples, as the core builds it."""
    from nemo_mlsl.data.blend import ValidationWindow, validation_set

    over = ["train.global_batch_size=16", "train.micro_batch_size=4", "train.val_samples_per_language=5", "train.val_every=2"]
    runs = ((3, 1), (40, 5))
    reqs = [_request(synth_data, tmp_path, overrides=over, max_steps=steps, seed=seed, out=str(tmp_path / f"run{steps}"))
            for steps, seed in runs]
    outs = [str(tmp_path / f"ranks{steps}") for steps, _ in runs]
    torch.multiprocessing.spawn(dp_worker, args=(1, _free_port(), reqs, outs, 1, 3), nprocs=1, join=True)
    windows = []
    for out in outs:
        res = load_ranks(out, 1)[0]
        bounds = res["evaluations"]
        assert len(bounds) == 4 and bounds[-1] == 3 * 8  # 3 evaluations x 2 global batches x 4 microbatches
        windows += [res["batches"][a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def key(batches):
        return [(int(b["dataset_id"][i]), b["tokens"][i].tolist(), float(b["loss_mask"][i].sum()))
                for b in batches for i in range(len(b["tokens"]))]

    fixed = ValidationWindow(validation_set(Manifest.load(synth_data), 5, 128), 16)
    want = [(int(s["dataset_id"]), s["tokens"].tolist(), float(s["loss_mask"].sum())) for s in (fixed[i] for i in range(32))]
    assert all(key(w) == want for w in windows)
    assert [m for _, _, m in want[30:]] == [0.0, 0.0] and min(m for _, _, m in want[:30]) > 0


def test_training_steps_are_bridges_own(synth_data, tmp_path):
    """In training mode the forward step returns Bridge's loss function unchanged (only 'lm loss' reported)."""
    from megatron.bridge.training.state import GlobalState

    from bridge_harness import StubGPT, stub_token_loss
    from mlsl_bridge.forward_step import FamilyForwardStep
    from mlsl_bridge.train import build_run

    built = build_run(_request(synth_data, tmp_path))
    state = GlobalState()
    state.cfg = built.run.config
    batch = {"tokens": torch.arange(16).view(2, 8), "labels": torch.arange(1, 17).view(2, 8), "loss_mask": torch.ones(2, 8),
             "position_ids": torch.arange(8).repeat(2, 1), "dataset_id": torch.tensor([0, 3])}
    step = FamilyForwardStep(built.forward_step.languages)
    from bridge_harness import cuda_on_cpu
    from megatron.core import parallel_state
    from nemo_mlsl.data.blend import one_process_group

    with one_process_group(), cuda_on_cpu():
        parallel_state.initialize_model_parallel(1, 1)
        try:
            model = StubGPT(built.run.config.model)
            model.train()
            output, loss_fn = step(state, iter([dict(batch)]), model)
            assert set(loss_fn(output)[2]) == {"lm loss"}
            model.eval()
            output, loss_fn = step(state, iter([dict(batch)]), model)
            loss, tokens, report = loss_fn(output)
        finally:
            parallel_state.destroy_model_parallel()
    per_token = stub_token_loss(batch["tokens"], batch["labels"])
    q = built.forward_step.languages
    assert torch.allclose(report[f"mlsl/{q[3]}/loss"], torch.stack([per_token[1].sum(), torch.tensor(8.0)]))
    assert torch.allclose(report[f"mlsl/{q[0]}/share"], torch.tensor([8.0, 16.0]))
    assert report[f"mlsl/{q[1]}/loss"].tolist() == [0.0, 0.0] and math.isclose(float(loss), float(per_token.sum()), rel_tol=1e-6)


# -- the CLI and the study -----------------------------------------------------------------------------


def test_recipes_build_dry_run_prints_the_validated_config():
    out = run_cli("recipes", "build", "atlas_s00", "--backend", "bridge", "--dry-run").stdout
    assert out.startswith("# Megatron-Bridge ConfigContainer for atlas_s00: validated by Bridge for 8 GPU(s)")
    assert "_target_: megatron.bridge.training.config.ConfigContainer" in out and "train_iters: 30000" in out
    assert "num_layers: 3" in out and "hidden_size: 128" in out and "mock dataset" in out


def test_recipes_build_dry_run_on_prepared_data(synth_data):
    out = run_cli("recipes", "build", "cpu_60k", "train.max_steps=20", "--backend", "bridge", "--dry-run", "--data", str(synth_data),
                  "--ratios", "amber=0.5,cobalt=0.3,jade=0.2", "--gpus-per-node", "1").stdout
    assert "validated by Bridge for 1 GPU(s)" in out and "tokenizer_type: SentencePieceTokenizer" in out
    assert f"{synth_data}/validation/qaa" in out and "dataset_id order: qaa, qab, qac, qad, qae, qaf" in out


def test_study_dry_run_plans_the_default_study_on_bridge(tmp_path):
    proc = run_cli("study", "--config", str(Path(__file__).parents[1] / "studies" / "default.yaml"), "--out", str(tmp_path / "s"), "--backend", "bridge", "--dry-run",
                   "--no-progress")
    out = proc.stdout
    assert "phase-1 Megatron-Bridge runs on the bridge backend" in out
    assert "-m nemo_mlsl.cli train --backend bridge --recipe cpu_15k" in out
    assert "# ConfigContainer validated by Megatron-Bridge for 1 GPU(s)" in out
    assert not (tmp_path / "s" / "results.jsonl").exists()


def test_bridge_backend_task_is_the_same_command_under_torchrun(tmp_path, monkeypatch):
    import nemo_run as run
    from nemo_run.run.torchx_backend.packaging import package

    from mlsl_bridge.study import BridgeBackend
    from nemo_mlsl.study.backend import RunSpec
    from nemo_mlsl.study.plan import PlannedRun

    planned = PlannedRun(run_id="design-x", purpose="design", rung="cpu_15k", tokens=100_000, ratios={"amber": 0.5, "cobalt": 0.5},
                         seed=0, N=15_000)
    spec = RunSpec(planned, data="/d", out="/o", store="/s.jsonl", tb_root="/tb", report_dir="/fit", tags={"purpose": "design"})
    backend = BridgeBackend(gpus_per_run=2)
    monkeypatch.chdir(tmp_path)  # NeMo-Run's packaging writes configs/ into the working directory
    app = package("x", backend.task(spec), run.LocalExecutor(ntasks_per_node=2, launcher="torchrun"))
    role = app.roles[0]
    assert role.entrypoint == "torchrun" and "--nproc-per-node" in role.args
    i = role.args.index("-m")
    assert role.args[i:i + 2] == ["-m", "nemo_mlsl.cli"] and role.args[i + 2:] == backend.arguments(spec)
    with pytest.raises(ConfigError, match="needs one process per GPU"):
        backend.train(spec)


# -- the GPU check's Bridge part ----------------------------------------------------------------------------


def test_gpu_check_builds_every_bridge_phase_dry(tmp_path):
    """gpu/check_bridge.py --dry builds and validates every run it would train on a lent GPU."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MLSL_GPU_WORK": str(tmp_path / "work"), "OUT": str(tmp_path / "out")}
    proc = subprocess.run([sys.executable, str(root / "gpu" / "check_bridge.py"), "--dry"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    assert report["dry"] is True and report["backend"] == "bridge"
    assert {k: v["ok"] for k, v in report["phases"].items()} == dict.fromkeys(["corpus", "plugins", "adaptive", "throughput"], True)
    assert report["phases"]["adaptive"]["result"]["steps"] == 150
    assert report["phases"]["plugins"]["result"]["plugins2"]["steps"] == 200
    assert report["phases"]["throughput"]["result"]["rung"] == "he2024_1b2"


def test_the_carried_bridge_wheel_list_is_current():
    """gpu/wheels-bridge.txt is what gpu/wheel_list.py --bridge derives from this environment."""
    import subprocess
    import sys

    path = Path(__file__).resolve().parents[1] / "gpu" / "wheels-bridge.txt"
    before = path.read_text()
    proc = subprocess.run([sys.executable, str(path.parent / "wheel_list.py"), "--bridge"], capture_output=True, text=True,
                          timeout=600)
    after = path.read_text()
    path.write_text(before)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert after == before
    assert "megatron-bridge==0.6.2" in before and "megatron-core==0.19.2" in before and "transformers==5.12.1" in before


def test_the_bridge_how_to_runs_as_written(tmp_path):
    """docs/bridge.md: every command block, run here (its environment), shown output compared."""
    from test_docs import blocks, run_doc

    doc = Path(__file__).resolve().parents[1] / "docs" / "bridge.md"
    assert sum(1 for _, _, shown, _ in blocks(doc) if shown) == 5
    run_doc(doc, tmp_path)


def test_train_start_writes_the_layout_and_hparams(synth_data, tmp_path):
    """The callback's on_train_start: TensorBoard's custom-scalars layout and the run's hparams (ratios, N, D, recipe,
    layer implementation) on Bridge's writer, in the run's own directory."""
    from types import SimpleNamespace

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2
    from torch.utils.tensorboard import SummaryWriter

    from mlsl_bridge.train import build_run

    built = build_run(_request(synth_data, tmp_path))
    writer = SummaryWriter(str(tmp_path / "tb"))
    built.callback.on_train_start(SimpleNamespace(state=SimpleNamespace(tensorboard_logger=writer)))
    writer.close()
    plugins, hparams = set(), {}
    for path in (tmp_path / "tb").glob("events.out.tfevents*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                plugins.add(value.metadata.plugin_data.plugin_name)
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        hparams = {k: v.string_value or v.number_value for k, v in data.session_start_info.hparams.items()}
    assert {"custom_scalars", "hparams"} <= plugins
    assert hparams["recipe"] == "cpu_15k" and hparams["backend"] == "bridge" and hparams["transformer_impl"] == "local"
    assert hparams["ratio/amber"] == 0.5 and hparams["D"] == 3 * 8 * 128


# -- a whole study on the Bridge backend -----------------------------------------------------------------


def test_the_bridge_backend_study_reaches_its_report_and_recovers_planted_gammas(tmp_path):
    """`mlsl study --backend bridge` end to end on CPU: the real Bridge backend builds every run, a stand-in launcher
    plays each through Bridge's evaluate() with the planted law's losses (tests/bridge_harness.py), and the one
    orchestration fits, plans phase 2 and reports; the fitted gammas are the planted ones."""
    import yaml

    from bridge_harness import PlantedLauncher
    from megatron.core import parallel_state
    from mlsl_bridge.study import BridgeBackend
    from nemo_mlsl.data.blend import one_process_group
    from nemo_mlsl.study.config import load_study
    from nemo_mlsl.study.runner import Study
    from nemo_standin import STUDY_FOR_STANDINS, check_standin_study

    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY_FOR_STANDINS))
    out = tmp_path / "study"
    with one_process_group():
        parallel_state.initialize_model_parallel(1, 1)
        try:
            Study(load_study(config), out, BridgeBackend(), PlantedLauncher(), progress=False).run()
        finally:
            parallel_state.destroy_model_parallel()
    check_standin_study(out, "bridge")


def test_training_needs_a_gpu_and_recipes_build_launches_torchrun(synth_data, tmp_path):
    """On a machine without CUDA `mlsl train --backend bridge` stops early with a named error (after checking the
    input); `recipes build --backend bridge` without --dry-run runs `mlsl train --backend bridge` under torchrun."""
    proc = run_cli("train", "--backend", "bridge", "--recipe", "cpu_15k", "--data", synth_data, "--ratios",
                   "amber=0.5,cobalt=0.3,jade=0.2", "--out", tmp_path / "r", "--max-steps", "3", check=False)
    assert proc.returncode == 2 and "Megatron-Bridge trains on CUDA GPUs and this machine has none" in proc.stderr
    # the run directory's lock may be taken before the GPU check; nothing of a run is written
    left = {q.name for q in (tmp_path / "r").iterdir()} if (tmp_path / "r").exists() else set()
    assert "Traceback" not in proc.stderr and not (left - {".lock", ".mlsl.lock", "mlsl.lock"}), left
    proc = run_cli("train", "--backend", "bridge", "--recipe", "cpu_15k", "--data", synth_data, "--ratios", "amber=0.5,ruby=0.5",
                   "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "ruby" in proc.stderr and "Traceback" not in proc.stderr
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "torchrun").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'torchrun.args'}\n")
    (fake / "torchrun").chmod(0o755)
    env_path = f"{fake}{os.pathsep}{os.environ['PATH']}"
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "nemo_mlsl.cli", "recipes", "build", "cpu_15k", "train.max_steps=3", "--backend",
                           "bridge", "--data", str(synth_data), "--ratios", "amber=0.5,cobalt=0.3,jade=0.2", "--log-dir",
                           str(tmp_path / "run"), "--gpus-per-node", "1"], capture_output=True, text=True,
                          env={**os.environ, "PATH": env_path})
    assert proc.returncode == 0, proc.stderr[-2000:]
    args = (tmp_path / "torchrun.args").read_text().split()
    assert args[:4] == ["--nproc-per-node=1", "-m", "nemo_mlsl.cli", "train"] and "bridge" in args
    assert args[args.index("--out") + 1] == str(tmp_path / "run") and args[-1] == "train.max_steps=3"

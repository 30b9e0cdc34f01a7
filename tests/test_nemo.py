"""NeMo 2 integration on CPU: every rung builds its config tree; counts match the ATLAS table; the data step
keeps family ids; the per-language loss reduction is right across simulated data-parallel ranks (gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import run_cli, require_nemo
from nemo_mlsl.errors import ConfigError
from nemo_mlsl.ladder import ATLAS_VOCAB, atlas_rungs, render_all
from nemo_mlsl.recipes import available, load, recipes_dir, validate_parallel

require_nemo()
RUNGS = sorted(available())


def test_generated_recipe_files_match_the_table():
    for rel, text in render_all().items():
        assert (recipes_dir() / rel).read_text() == text, f"{rel} drifted: run python -m nemo_mlsl.ladder --write"


@pytest.mark.parametrize("rung", atlas_rungs(), ids=lambda r: r.name)
def test_atlas_parameter_counts_match_the_paper_exactly(rung):
    recipe = load(rung.name)
    assert rung.paper_count() == rung.params == recipe.paper["params"]
    built = recipe.params(ATLAS_VOCAB)
    # as built (Llama-style): two RMSNorms per layer and a final one, where the table counts one d-vector per layer
    assert built.total == rung.params + rung.layers * rung.embed + rung.embed
    assert built.non_embedding == built.total - ATLAS_VOCAB * rung.embed


def test_he2024_rungs_hit_their_sizes():
    for name, target in (("he2024_85m", 85e6), ("he2024_397m", 397e6), ("he2024_810m", 810e6), ("he2024_1b2", 1.2e9)):
        assert load(name).params(ATLAS_VOCAB).non_embedding == pytest.approx(target, rel=0.02)


def test_recipes_list_json():
    rows = json.loads(run_cli("recipes", "list", "--json").stdout)
    by = {r["name"]: r for r in rows}
    assert set(by) == set(RUNGS)
    s0 = by["atlas_s00"]
    assert s0["source"] == "atlas" and s0["params"] == 9_044_352 and s0["model_params"] == 9_044_352 + 3 * 128 + 128
    for key in ("non_embedding_params", "num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                "tensor_model_parallel_size", "pipeline_model_parallel_size", "tokens"):
        assert key in s0
    assert by["cpu_100k"]["source"] == "cpu" and by["he2024_85m"]["source"] == "he2024"


def test_unknown_recipe_lists_valid_names():
    with pytest.raises(ConfigError, match="valid names: .*atlas_s00"):
        load("atlas_s99")


def test_bad_parallel_layouts_name_the_rung_and_sizes():
    with pytest.raises(ConfigError, match=r"recipe 'atlas_s05' \(TP=2.*num_attention_heads=9 is not divisible by TP=2"):
        load("atlas_s05", ["parallel.tensor_model_parallel_size=2"])
    with pytest.raises(ConfigError, match="num_layers=3 is not divisible by PP=2"):
        load("atlas_s00", ["parallel.pipeline_model_parallel_size=2"])
    with pytest.raises(ConfigError, match="not divisible by TPxPPxCP"):
        validate_parallel(load("atlas_s46"), num_nodes=1, gpus_per_node=6)


@pytest.fixture(scope="module")
def built(synth_data):
    from mlsl_nemo.recipe import pretrain_recipe

    return {r: pretrain_recipe(r, str(synth_data), "amber=0.5,cobalt=0.3,jade=0.2", dir="/tmp/nemo_logs", check_epochs=False)
            for r in RUNGS if not r.startswith("cpu")}


def test_every_rung_builds_a_matching_nemo_config_tree(built, synth_data):
    from nemo.collections import llm

    from mlsl_nemo.callback import NeMoFamilyValidationCallback
    from mlsl_nemo.data_step import family_gpt_data_step

    for name, recipe in built.items():
        r = load(name)
        assert recipe.__fn_or_cls__ is llm.pretrain
        cfg = recipe.model.config
        for field in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads"):
            assert getattr(cfg, field) == getattr(r.model, field), (name, field)
        assert cfg.kv_channels == r.model.head_dim and cfg.data_step_fn is family_gpt_data_step
        assert cfg.normalization == "RMSNorm" and cfg.gated_linear_unit and cfg.share_embeddings_and_output_weights
        s = recipe.trainer.strategy
        assert (s.tensor_model_parallel_size, s.pipeline_model_parallel_size) == (r.parallel.tensor_model_parallel_size,
                                                                                  r.parallel.pipeline_model_parallel_size)
        assert recipe.trainer.devices == 8 and recipe.trainer.max_steps == r.train.max_steps
        assert recipe.data.global_batch_size == r.train.global_batch_size and recipe.data.micro_batch_size == r.train.micro_batch_size
        assert recipe.optim.config.lr == r.train.lr and recipe.optim.lr_scheduler.max_steps == r.train.max_steps
        cbs = [c.__fn_or_cls__ for c in recipe.trainer.callbacks]
        assert NeMoFamilyValidationCallback in cbs
        paths = recipe.data.paths
        assert len(paths["validation"]) == 2 * 6 and paths["validation"][0] == 1.0  # 6 languages, equal weights
        assert sum(paths["train"][0::2]) == pytest.approx(1.0)


def test_dry_run_prints_the_config(synth_data):
    out = run_cli("recipes", "build", "atlas_s00", "--data", synth_data, "--ratios", "amber=0.5,cobalt=0.3,jade=0.2",
                  "--nodes", "2", "--gpus-per-node", "4", "--dry-run").stdout
    assert "num_nodes=2" in out and "devices=4" in out and "family_gpt_data_step" in out and "NeMoFamilyValidationCallback" in out


def test_recipes_build_launches_the_recipe_s_layout_and_refuses_other_nodes(synth_data):
    """The local executor it launches matches the recipe built (GPUs per node from --gpus-per-node or the overrides); it
    starts no other node, so a run on several nodes is a named error, not a torchrun waiting for nodes that never come."""
    import nemo_run as run

    from mlsl_nemo.backend import local_executor

    parallel = load("atlas_s00", ["parallel.gpus_per_node=2"]).parallel
    ex = local_executor(run, parallel, None, None)
    assert (ex.ntasks_per_node, ex.nodes, ex.launcher) == (2, 1, "torchrun")
    assert local_executor(run, parallel, 1, 4).ntasks_per_node == 4
    with pytest.raises(ConfigError, match="runs on this node only, and the run asks for 2 nodes"):
        local_executor(run, parallel, 2, None)
    proc = run_cli("recipes", "build", "atlas_s00", "--data", synth_data, "--ratios", "amber=0.5,cobalt=0.3,jade=0.2",
                   "--nodes", "2", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("mlsl recipes: error: mlsl recipes build runs on this node only, and the run asks for 2 nodes")


def test_nemo_cli_discovers_the_factories():
    nemo = Path(sys.executable).parent / "nemo"
    proc = subprocess.run([str(nemo), "llm", "pretrain", "--factory", "mlsl_atlas_s00", "--help"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "MLSL_DATA": "", "NO_COLOR": "1", "COLUMNS": "200"})
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "mlsl_atlas_s00" in text


def test_data_step_keeps_dataset_id(monkeypatch):
    from megatron.core import parallel_state

    from mlsl_nemo.data_step import family_gpt_data_step

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)  # CPU stand-in for the device copy
    monkeypatch.setattr(parallel_state, "is_pipeline_first_stage", lambda *a, **k: True)
    monkeypatch.setattr(parallel_state, "is_pipeline_last_stage", lambda *a, **k: True)
    monkeypatch.setattr(parallel_state, "get_context_parallel_world_size", lambda *a, **k: 1)
    batch = {"tokens": torch.ones(3, 8, dtype=torch.long), "labels": torch.ones(3, 8, dtype=torch.long),
             "loss_mask": torch.ones(3, 8), "position_ids": torch.arange(8).repeat(3, 1), "attention_mask": torch.ones(3, 1, 8, 8),
             "dataset_id": torch.tensor([2, 0, 1], dtype=torch.int16)}
    out = family_gpt_data_step(iter([(batch, 0, 0)]))
    assert out["dataset_id"].tolist() == [2, 0, 1] and out["dataset_id"].dtype == torch.long
    assert torch.equal(out["tokens"], batch["tokens"])


def _reduction_worker(rank, world, init, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    from megatron.core import parallel_state

    parallel_state.get_data_parallel_group = lambda *a, **k: dist.group.WORLD  # simulate DP ranks over gloo
    from mlsl_nemo.loss_reduction import make_reduction_class

    red = make_reduction_class()(num_languages=4, group_fn=lambda: dist.group.WORLD)
    rng = np.random.default_rng(rank)
    outs = []
    for _ in range(3):  # three microbatches on this rank
        loss = torch.tensor(rng.uniform(1, 4, (2, 6)), dtype=torch.float32)
        mask = torch.tensor(rng.integers(0, 2, (2, 6)), dtype=torch.float32)
        ids = torch.tensor(rng.integers(0, 4, 2))
        outs.append(red.forward({"loss_mask": mask, "dataset_id": ids}, loss)[2])
    val_loss = red.reduce(outs)
    if rank == 0:
        with open(out, "w") as fh:
            json.dump({"acc": red.acc.tolist(), "val_loss": float(val_loss)}, fh)
    dist.barrier()
    dist.destroy_process_group()


# four gloo ranks take ~30 s each on 2 cores: in `make test` (CI), out of the edit loop (`make test-fast`)
FOUR_RANKS = pytest.mark.slow


@pytest.mark.parametrize("world", [2, pytest.param(4, marks=FOUR_RANKS)])
def test_family_loss_reduction_over_data_parallel_ranks(tmp_path, world):
    from nemo_mlsl.distributed import microbatch_language_sums

    mp.spawn(_reduction_worker, args=(world, f"file://{tmp_path}/rdzv", str(tmp_path / "o.json")), nprocs=world, join=True)
    got = json.loads((tmp_path / "o.json").read_text())
    want = torch.zeros(2, 4, dtype=torch.float64)
    tot = [0.0, 0.0]
    for rank in range(world):
        rng = np.random.default_rng(rank)
        for _ in range(3):
            loss = torch.tensor(rng.uniform(1, 4, (2, 6)), dtype=torch.float32)
            mask = torch.tensor(rng.integers(0, 2, (2, 6)), dtype=torch.float32)
            ids = torch.tensor(rng.integers(0, 4, 2))
            want += microbatch_language_sums(loss, mask, ids, 4)
            tot[0] += float((loss * mask).sum())
            tot[1] += float(mask.sum())
    assert np.allclose(got["acc"], want.numpy(), rtol=1e-6)
    assert got["val_loss"] == pytest.approx(tot[0] / tot[1], rel=1e-5)  # NeMo's val_loss is unchanged


def test_study_nemo_backend_dry_run(tmp_path):
    out = run_cli("study", "--config", Path(__file__).resolve().parents[1] / "studies" / "default.yaml", "--out", tmp_path / "s",
                  "--quick", "--backend", "nemo", "--dry-run").stdout
    assert "phase-1 NeMo runs" in out and "design-cpu_15k-50k-m0" in out and "family_gpt_data_step" in out


# --- the recipe's objects through NeMo's own entry points ---------------------------------------------------

def _recipe_with_store(synth_data, tmp_path, **kw):
    from mlsl_nemo.recipe import pretrain_recipe

    return pretrain_recipe("atlas_s00", str(synth_data), "amber=0.5,cobalt=0.3,jade=0.2", store=str(tmp_path / "results.jsonl"),
                           dir=str(tmp_path / "nemo"), num_gpus_per_node=1, check_epochs=False,
                           overrides=["train.global_batch_size=32", "train.micro_batch_size=8"], **kw)


def test_a_recipe_with_a_store_builds_nemos_trainer(synth_data, tmp_path):
    """What failed on the GPU: NeMo deep-copies the callbacks it is given (io capture) and the fitting callback's
    store held a thread lock. The trainer is built from the recipe as NeMo builds it (fiddle), on the CPU."""
    import copy
    import pickle

    import fiddle as fdl
    from nemo import lightning as nl
    from nemo_run.core.serialization.zlib_json import ZlibJSONSerializer

    from mlsl_lightning.callbacks.scaling_law_fit import ScalingLawFitCallback
    from mlsl_nemo.callback import NeMoFamilyValidationCallback, NeMoMixtureMonitorCallback

    recipe = _recipe_with_store(synth_data, tmp_path, record_extra={"purpose": "design", "phase": 1})
    assert ZlibJSONSerializer().deserialize(ZlibJSONSerializer().serialize(recipe)) == recipe  # what NeMo-Run ships to a job
    callbacks = fdl.build(recipe.trainer.callbacks)
    for clone in (copy.deepcopy(callbacks), pickle.loads(pickle.dumps(callbacks))):
        assert [type(c) for c in clone] == [type(c) for c in callbacks]
    recipe.trainer.accelerator = "cpu"
    trainer = fdl.build(recipe.trainer)
    assert isinstance(trainer, nl.Trainer) and hasattr(trainer, "__io__")  # NeMo's io capture ran
    fit_cb = next(c for c in trainer.callbacks if isinstance(c, ScalingLawFitCallback))
    assert fit_cb.live.store.path == tmp_path / "results.jsonl" and fit_cb.make_record.extra == {"purpose": "design", "phase": 1}
    assert {NeMoFamilyValidationCallback, NeMoMixtureMonitorCallback} <= {type(c) for c in trainer.callbacks}


def test_one_gpu_overrides_are_checked_against_one_gpu(synth_data, tmp_path):
    recipe = _recipe_with_store(synth_data, tmp_path)
    assert recipe.trainer.devices == 1 and recipe.data.global_batch_size == 32 and recipe.data.micro_batch_size == 8
    from mlsl_nemo.recipe import pretrain_recipe

    with pytest.raises(ConfigError, match=r"global_batch_size=32 is not divisible by micro_batch_size x DP = 8x8"):
        pretrain_recipe("atlas_s00", str(synth_data), "amber=1", num_gpus_per_node=8, check_epochs=False,
                        overrides=["train.global_batch_size=32", "train.micro_batch_size=8"])


def test_the_layer_implementation_is_chosen_where_the_model_is_built(synth_data, tmp_path):
    from nemo.collections import llm

    from mlsl_nemo.layers import SPECS, auto_layer_spec, te_layer_spec
    from mlsl_nemo.recipe import pretrain_recipe

    assert _recipe_with_store(synth_data, tmp_path).model.config.transformer_layer_spec is auto_layer_spec
    local = pretrain_recipe("atlas_s00", str(synth_data), "amber=1", num_gpus_per_node=1, check_epochs=False,
                            overrides=["model.transformer_impl=local", "train.global_batch_size=32", "train.micro_batch_size=8"])
    assert local.model.config.transformer_layer_spec is SPECS["local"] and local.model.config.masked_softmax_fusion is False
    cfg = llm.GPTConfig(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=128, masked_softmax_fusion=True)
    spec = auto_layer_spec(cfg)  # this machine has no TransformerEngine: megatron-core's local layers, fusions off
    assert cfg.mlsl_transformer_impl == "local" and cfg.masked_softmax_fusion is False and "TransformerLayer" in str(spec.module)
    with pytest.raises(ConfigError, match="transformer_impl=transformer_engine, but transformer_engine does not import"):
        te_layer_spec(cfg)
    with pytest.raises(ConfigError, match="transformer_impl must be one of auto, transformer_engine, local"):
        load("atlas_s00", ["model.transformer_impl=fast"])


def test_the_mixture_monitor_reads_the_built_blend_of_nemos_datamodule(synth_data):
    """NeMo's PreTrainingDataModule builds the blend from the recipe's paths (megatron-core on CPU); the monitor
    counts the consumed samples in its sample index and matches the blend's audit of the same samples."""
    import fiddle as fdl

    from mlsl_nemo.callback import NeMoMixtureMonitorCallback
    from mlsl_nemo.recipe import pretrain_recipe
    from nemo_mlsl.data.blend import BlendConfig, FamilyBlend, one_process_group
    from nemo_mlsl.data.manifest import Manifest

    recipe = pretrain_recipe("atlas_s00", str(synth_data), "amber=0.5,cobalt=0.3,jade=0.2", num_gpus_per_node=1, check_epochs=False,
                             max_steps=40, overrides=["model.seq_length=64", "train.global_batch_size=16", "train.micro_batch_size=8"])
    dm = fdl.build(recipe.data)
    with one_process_group():  # NeMo builds under torch.distributed (megatron caches the blend's indices then)
        dm.build(trainer_max_steps=40, trainer_val_check_interval=40, trainer_limit_val_batches=1, trainer_limit_test_batches=1)
    monitor = fdl.build(next(c for c in recipe.trainer.callbacks if c.__fn_or_cls__ is NeMoMixtureMonitorCallback))

    class Trainer:  # what the monitor reads from Lightning's trainer
        datamodule, global_step, max_steps = dm, 25, 40

    got = monitor.summary(Trainer())
    m = Manifest.load(synth_data)
    built = FamilyBlend(m, BlendConfig({"amber": 0.5, "cobalt": 0.3, "jade": 0.2}, seq_length=64, seed=1234)).build(40 * 16, 1)
    idx = np.asarray(built.train.dataset_index[: 25 * 16])
    langs = built.train_languages
    for fam in ("amber", "cobalt", "jade"):
        want = sum((idx == langs.index(l)).sum() for l in langs if m.family_of(l) == fam) / (25 * 16)
        assert got[f"mixture/{fam}/ratio"] == pytest.approx(want, abs=1e-12)
        assert got[f"mixture/{fam}/ratio"] == pytest.approx({"amber": 0.5, "cobalt": 0.3, "jade": 0.2}[fam], abs=0.01)
        assert got[f"mixture/{fam}/tokens"] == pytest.approx(want * 25 * 16 * 64)


def _callback_worker(rank, world, pp, langs, init, out):
    """One rank of a DP x PP group: megatron-core's parallel_state over gloo, the callback and NeMo's loss reduction."""
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=pp)
    from mlsl_nemo.callback import NeMoFamilyValidationCallback

    n = len(langs)
    cb = NeMoFamilyValidationCallback(langs, {l: f"fam{i % 2}" for i, l in enumerate(langs)}, {l: 2.0 for l in langs})
    logged = {}

    class Chunk:  # a model chunk: NeMo reads the loss reduction from it; Lightning's log goes to `logged`
        def log(self, name, value, **kw):
            logged[name] = value

    chunk = Chunk()
    trainer = type("T", (), {"strategy": type("S", (), {"model": [chunk]})(), "sanity_checking": False})()
    cb.on_fit_start(trainer, chunk)
    cb.on_validation_epoch_start(trainer, chunk)
    red = chunk._validation_loss_reduction
    if parallel_state.is_pipeline_last_stage():  # where megatron-core calls the loss function
        for step in range(2):
            outs = []
            for mb in range(3):
                loss, mask, ids = _microbatch(parallel_state.get_data_parallel_rank(), step, mb, n)
                batch = {"loss_mask": mask} if n == 1 else {"loss_mask": mask, "dataset_id": ids}
                outs.append(red.forward(batch, loss)[2])
            red.reduce(outs)
    cb.on_validation_epoch_end(trainer, chunk)
    cb.on_fit_start(trainer, chunk)  # installs again: the same class, so the accumulator is kept
    assert chunk._validation_loss_reduction is red
    if rank == 0:  # the logging rank sits on the first pipeline stage
        with open(out, "w") as fh:
            json.dump(logged, fh)
    dist.barrier()
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


def _microbatch(dp_rank, step, mb, n):
    rng = np.random.default_rng([dp_rank, step, mb])
    loss = torch.tensor(rng.uniform(1, 4, (2, 6)), dtype=torch.float32)
    mask = torch.tensor(rng.integers(0, 2, (2, 6)), dtype=torch.float32)
    return loss, mask, torch.tensor(rng.integers(0, n, 2))


@pytest.mark.parametrize("world,pp,n", [(2, 1, 3), pytest.param(4, 2, 3, marks=FOUR_RANKS), pytest.param(4, 2, 1, marks=FOUR_RANKS)],
                         ids=["DP2", "DP2xPP2", "DP2xPP2-one-language"])
def test_family_callback_over_data_and_pipeline_parallel_ranks(tmp_path, world, pp, n):
    from nemo_mlsl.metrics import family_metrics

    langs = [f"q{i}" for i in range(n)]
    mp.spawn(_callback_worker, args=(world, pp, langs, f"file://{tmp_path}/rdzv", str(tmp_path / "o.json")), nprocs=world, join=True)
    got = json.loads((tmp_path / "o.json").read_text())
    sums = np.zeros((n, 2))
    for dp_rank in range(world // pp):
        for step in range(2):
            for mb in range(3):
                loss, mask, ids = _microbatch(dp_rank, step, mb, n)
                ids = ids if n > 1 else torch.zeros(2, dtype=torch.long)
                for row in range(2):
                    sums[int(ids[row]), 0] += float((loss[row] * mask[row]).sum())
                    sums[int(ids[row]), 1] += float(mask[row].sum())
    want = family_metrics(sums, langs, {l: f"fam{i % 2}" for i, l in enumerate(langs)}, {l: 2.0 for l in langs})
    assert len(got) == 3 * (len(want["families"]) + len(want["languages"]))
    for kind, key in (("families", "val_family"), ("languages", "val_language")):
        for name, m in want[kind].items():
            for metric in ("loss", "bpb", "ppl"):
                assert got[f"{key}/{name}/{metric}"] == pytest.approx(m[metric], rel=1e-6), (key, name, metric)

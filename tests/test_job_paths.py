"""Every path a job or NeMo's data module receives is absolute: a Slurm job or a container runs in another working
directory, so a study started with relative paths (data, config, --out) must hand its runs absolute ones."""

import os
from pathlib import Path

from conftest import require_nemo
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.study.backend import train_arguments
from nemo_mlsl.study.plan import PlannedRun
from nemo_mlsl.study.runner import run_specs


def _relative(synth_data: Path, monkeypatch) -> str:
    monkeypatch.chdir(synth_data.parent)
    return synth_data.name  # "data", relative to the working directory


def test_a_manifest_loaded_by_a_relative_path_gives_absolute_prefixes(synth_data, monkeypatch):
    m = Manifest.load(_relative(synth_data, monkeypatch))
    assert m.root == synth_data.resolve() and m.tokenizer_path.is_absolute()
    assert all(Path(p.prefix).is_absolute() for lang in m.languages for p in m.parts(lang, "train"))


def test_run_specs_and_the_job_command_line_hold_absolute_paths(synth_data, monkeypatch):
    m = Manifest.load(_relative(synth_data, monkeypatch))
    run = PlannedRun("r0", "design", "cpu_15k", 1000, {"amber": 1.0}, 1, 1)
    (spec,) = run_specs([run], Path("study"), m)
    for path in (spec.data, spec.out, spec.store, spec.tb_root, spec.report_dir):
        assert Path(path).is_absolute(), path
    assert spec.data == str(synth_data.resolve()) and spec.out == str(synth_data.parent.resolve() / "study" / "runs" / "r0")
    args = train_arguments(spec)
    for flag in ("--data", "--out", "--store", "--tb-root", "--report-dir"):
        assert Path(args[args.index(flag) + 1]).is_absolute(), flag


def test_nemo_s_data_module_gets_absolute_prefixes_from_a_relative_data_path(synth_data, monkeypatch):
    require_nemo()
    from mlsl_nemo.recipe import pretrain_recipe

    recipe = pretrain_recipe("atlas_s00", _relative(synth_data, monkeypatch), "amber=0.5,cobalt=0.3,jade=0.2",
                             num_gpus_per_node=1, check_epochs=False)
    prefixes = [p for split in ("train", "validation") for p in recipe.data.paths[split] if isinstance(p, str)]
    assert prefixes and all(os.path.isabs(p) for p in prefixes), prefixes
    assert os.path.isabs(recipe.data.tokenizer.model_path) and os.path.isabs(recipe.data.index_mapping_dir)

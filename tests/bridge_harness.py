"""Drive Megatron-Bridge's own evaluation on a CPU: Bridge's data iterators over the family blend, Bridge's
``evaluate()`` with its reduction and callbacks, our forward step; only the GPT model call is a stand-in
(per-token loss from a fixed formula of tokens and labels, so the truth can be computed directly).

Bridge calls CUDA in a few places (``.cuda()``, ``device="cuda"``, ``torch.cuda.synchronize``); ``cuda_on_cpu``
redirects those to the CPU for the duration of a test. Used by ``tests/test_bridge.py``, in-process and in
spawned gloo workers (data parallel).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode


def stub_token_loss(tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A deterministic 'per-token loss' in [0.5, 5.5) that differs between tokens."""
    return ((tokens * 31 + labels * 17) % 97).float() / 97 * 5 + 0.5


class StubGPT(torch.nn.Module):
    """Stands in for megatron-core's GPTModel at the model call only, one pipeline stage of it.

    Like a real pipeline, the first stage sees only tokens and sends hidden states ``[seq, batch, hidden]`` on
    (the tokens, encoded exactly in two channels), and the last stage sees only labels and the hidden states it
    received, and returns per-token losses: from ``stub_token_loss`` or, with ``sample_loss``, one planted value per
    sample (looked up by the ``dataset_id`` of the batch the recording iterator handed out last: the batch being
    forwarded; one stage only)."""

    def __init__(self, config: Any, sample_loss=None, recording: "_Recording | None" = None):
        super().__init__()
        from megatron.core import parallel_state
        from megatron.core.enums import ModelType

        self.config = config
        self.model_type = ModelType.encoder_or_decoder
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.sample_loss, self.recording = sample_loss, recording
        self.first = parallel_state.is_pipeline_first_stage()
        self.last = parallel_state.is_pipeline_last_stage()
        self.input_tensor: torch.Tensor | None = None

    def set_input_tensor(self, tensor: Any) -> None:
        """Megatron hands a later pipeline stage what the stage before it sent."""
        self.input_tensor = tensor[0] if isinstance(tensor, (list, tuple)) else tensor

    def forward(self, input_ids, position_ids, attention_mask, labels=None, **kwargs):
        if self.first:
            tokens = input_ids
        else:
            assert input_ids is None, "a later pipeline stage is given no tokens"
            hidden = self.input_tensor.float()
            tokens = (hidden[..., 0] * 16 + hidden[..., 1]).round().long().t().contiguous()  # [batch, seq]
        if not self.last:
            assert labels is None, "an earlier pipeline stage is given no labels"
            hidden = torch.zeros(tokens.shape[1], tokens.shape[0], self.config.hidden_size, dtype=self.config.pipeline_dtype
                                 or torch.float32)
            hidden[..., 0], hidden[..., 1] = (tokens // 16).t(), (tokens % 16).t()
            return hidden
        if self.sample_loss is None:
            return stub_token_loss(tokens, labels)
        ids = self.recording.batches[-1].get("dataset_id", torch.zeros(tokens.shape[0], dtype=torch.long))
        return self.sample_loss(ids.long())[:, None].expand(tokens.shape).float().contiguous()


class _CudaOnCpu(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if "device" in kwargs and kwargs["device"] is not None and "cuda" in str(kwargs["device"]):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and len(args) > 1 and isinstance(args[1], (str, torch.device)) and "cuda" in str(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_on_cpu():
    saved = torch.cuda.synchronize, torch.cuda.current_device
    torch.cuda.synchronize = lambda *a, **k: None
    torch.cuda.current_device = lambda: "cpu"
    try:
        with _CudaOnCpu():
            yield
    finally:
        torch.cuda.synchronize, torch.cuda.current_device = saved


class _Recording:
    """Passes the batches the forward step reads in evaluation through, keeping a copy of each (the direct
    computation's input), and how many each evaluation read (``evaluations``)."""

    def __init__(self, source=None):
        self.source = source
        self.batches: list[dict[str, torch.Tensor]] = []
        self.evaluations: list[int] = []

    def watch(self, validation) -> None:
        """Record what the forward step's ``FixedValidation`` hands out, and where each evaluation starts it."""
        stream, start = validation.iterator, validation.start

        def iterator(state, model):
            self.source = stream(state, model)
            return self

        def started(state, model):
            self.evaluations.append(len(self.batches))
            start(state, model)

        validation.iterator, validation.start = iterator, started

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.source)
        self.batches.append({k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)})
        return batch


def direct_sums(batches: list[dict[str, torch.Tensor]], n_languages: int) -> np.ndarray:
    """``[languages, 2]`` loss sum and tokens computed straight from the batches (float64, no Bridge, no our code)."""
    out = np.zeros((n_languages, 2))
    for b in batches:
        loss = (stub_token_loss(b["tokens"], b["labels"]).double() * b["loss_mask"].double()).numpy()
        mask = b["loss_mask"].double().numpy()
        ids = b["dataset_id"].numpy() if "dataset_id" in b else np.zeros(len(mask), dtype=int)
        for i, lang in enumerate(ids.tolist()):
            out[lang, 0] += loss[i].sum()
            out[lang, 1] += mask[i].sum()
    return out


def training_steps(state: Any, forward_step: Any, train_iterator: Any, model: Any) -> list[dict[str, torch.Tensor]]:
    """Every training step of the run, ``train_iters`` of them, as Bridge's ``train_step`` runs its forward passes:
    megatron's pipeline schedule (``get_forward_backward_func``) with the forward step, Bridge's training data
    iterator and this step's microbatches, the model in training mode (forward only: the stand-in has nothing to
    learn, and no optimizer steps). Returns the batches the forward step read from Bridge's iterator, in order."""
    from megatron.bridge.training.utils.pg_utils import get_pg_collection
    from megatron.bridge.training.utils.train_utils import prepare_forward_step_func
    from megatron.core.pipeline_parallel import get_forward_backward_func

    cfg = state.cfg
    pg = get_pg_collection([model])
    recording = _Recording(train_iterator)
    step_fn = prepare_forward_step_func(forward_step, state)
    forward_backward = get_forward_backward_func(pp_size=pg.pp.size(), vp_size=cfg.model.virtual_pipeline_model_parallel_size)
    microbatches = cfg.train.global_batch_size // (cfg.train.micro_batch_size * pg.dp.size())
    model.train()
    for step in range(cfg.train.train_iters):
        state.train_state.step = step
        forward_backward(forward_step_func=step_fn, data_iterator=recording, model=[model], num_microbatches=microbatches,
                         seq_length=cfg.model.seq_length, micro_batch_size=cfg.train.micro_batch_size, forward_only=True)
    model.eval()
    return recording.batches


def evaluate_run(request: Any, out: str | Path, *, final: bool = True, planted=None, evaluations: int = 1,
                 train: bool = False) -> dict[str, Any]:
    """Build the run (``mlsl_bridge.train.build_run``), then ``evaluations`` Bridge evaluations (the last at the last
    step) on this process's data-parallel shard and pipeline stage. torch.distributed and megatron's parallel
    state must be initialised (gloo). Writes this rank's batches (those the forward step read in evaluation) and
    results to ``out/rank<k>.json`` and returns them. ``planted(built)`` gives a per-sample loss function of
    ``dataset_id``. With ``train``, every training step runs first (``training_steps``) and the batches it read
    from Bridge's training iterator are written too (``train_batches``)."""
    from megatron.bridge.data.loaders import build_train_valid_test_data_iterators
    from megatron.bridge.data.utils import get_dataset_provider
    from megatron.bridge.training.callbacks import CallbackManager
    from megatron.bridge.training.config import runtime_config_update
    from megatron.bridge.training.eval import evaluate
    from megatron.bridge.training.state import GlobalState
    from megatron.bridge.training.tokenizers.tokenizer import build_tokenizer
    from megatron.core import parallel_state

    from mlsl_bridge.train import build_run

    built = build_run(request)
    cfg = built.run.config
    cfg.dataset.num_workers, cfg.dataset.pin_memory, cfg.dataset.persistent_workers = 0, False, False
    with cuda_on_cpu():
        runtime_config_update(cfg)
        cfg.dataset.tokenizer = build_tokenizer(cfg.tokenizer)
        state = GlobalState()
        state.cfg = cfg
        train_iterator, valid, _ = build_train_valid_test_data_iterators(cfg, state.train_state,
                                                                         get_dataset_provider(cfg.dataset),
                                                                         parallel_state.get_data_parallel_group())
        if cfg.model.pipeline_dtype is None:
            cfg.model.pipeline_dtype = torch.float32
        recording = _Recording()
        assert built.callback.validation is built.forward_step.validation  # build_run links the two
        recording.watch(built.forward_step.validation)
        manager = CallbackManager()
        manager.add(built.callback)
        model = StubGPT(cfg.model, planted(built) if planted else None, recording)
        trained = training_steps(state, built.forward_step, train_iterator, model) if train else []
        for k in range(evaluations):  # Bridge's own validation stream goes in, as in its training loop
            state.train_state.step = cfg.train.train_iters - (evaluations - 1 - k) if final else 1 + k
            total, _, _ = evaluate(state, built.forward_step, valid, [model], None, cfg.model, callback_manager=manager)
        recording.evaluations.append(len(recording.batches))
        if state.tensorboard_logger is not None:
            state.tensorboard_logger.flush()
    rank = torch.distributed.get_rank()
    result = {"rank": rank, "total": {k: float(v) for k, v in total.items()}, "last": built.callback.last,
              "record": built.callback.record, "languages": built.forward_step.languages,
              "family_of": built.callback.family_of, "bytes_per_token": built.callback.bytes_per_token,
              "batches": [{k: v.tolist() for k, v in b.items()} for b in recording.batches],
              "train_batches": [{k: v.tolist() for k, v in b.items() if k == "dataset_id"} for b in trained],
              "evaluations": recording.evaluations, "stage": [parallel_state.get_pipeline_model_parallel_rank(),
                                                            parallel_state.get_data_parallel_rank()]}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    return result


def dp_worker(rank: int, world: int, port: int, request: Any, out: str, pp: int = 1, evaluations: int = 1,
              train: bool = False) -> None:
    """One rank of DP x PP (``torch.multiprocessing.spawn`` target); ``request`` and ``out`` may be lists (runs one
    after the other in this process)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(1, pp)
    try:
        for req, dest in zip(*((request, out) if isinstance(request, list) else ([request], [out]))):
            evaluate_run(req, dest, evaluations=evaluations, train=train)
    finally:
        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()


def load_ranks(out: str | Path, world: int) -> list[dict[str, Any]]:
    results = [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(world)]
    for res in results:
        for key in ("batches", "train_batches"):
            res[key] = [{k: torch.tensor(v) for k, v in b.items()} for b in res.get(key, [])]
    return results


def planted_for(run_id: str):
    """Per-sample losses of the planted joint law (``nemo_standin.planted_loss``) for one run: each language's value
    is its family's loss at the run's N, D and family ratio."""
    from nemo_standin import planted_loss

    def make(built) -> Any:
        rec = built.callback.make_record
        N, D = rec.fields["N"], built.run.steps * built.run.tokens_per_step
        ratios = built.run.blend["family_ratios"]
        fam_of = built.callback.family_of
        table = torch.tensor([planted_loss(fam_of[l], N, D, ratios[fam_of[l]], run_id) for l in built.forward_step.languages])
        return lambda ids: table[ids]

    return make


class PlantedLauncher:
    """Stands in for the GPU at the launcher seam of the Bridge study backend: each planned run is built by the
    real backend (``BridgeBackend.request`` → ``build_run``) and played through Bridge's own ``evaluate()`` with
    the real forward step and callback, the model call answering with the planted law's losses, so the
    callback builds the record, appends it to the study's store and refits, exactly as after a GPU run."""

    def launch(self, backend, specs, on_done) -> None:
        for spec in specs:
            spec.clean()
            evaluate_run(backend.request(spec), spec.out, planted=planted_for(spec.run_id))
            on_done(spec)


# -- an adaptive run: Bridge's training loop order, the policy deciding at each boundary ----------------------------

FIXED_POLICY = "bridge_test_fixed"
# what the fixed test policy decides at each boundary (any history): shares no other interval has
PLAN = {2: {"amber": 0.1, "cobalt": 0.3, "jade": 0.6}, 4: {"amber": 0.3, "cobalt": 0.7}}


def fixed_policy(ctx):
    """The ratios ``PLAN`` holds for the boundary the history ends at, with what the policy was shown as evidence."""
    from nemo_mlsl.policies import Decision

    last = ctx.history[-1]
    return Decision(dict(PLAN[last.step]), {"step": last.step, "points": len(ctx.history),
                                            "seen_loss": dict(last.family_loss), "drawn": dict(last.family_tokens),
                                            "remaining": ctx.remaining_tokens})


HISTORY_POLICY = "bridge_test_history"


def history_policy(ctx):
    """Ratios that depend on the whole history (each family's loss to the power of the number of validations, times
    its tokens drawn so far), so a decision made from a lost or partial history is told apart; the evidence lists the
    steps it read."""
    from nemo_mlsl.policies import Decision, project

    n = len(ctx.history)
    raw = {f: ctx.history[-1].family_loss[f] ** n * (1.0 + ctx.history[-1].family_tokens[f] / 1e5) for f in ctx.previous}
    total = sum(raw.values())
    return Decision(project({f: v / total for f, v in raw.items()}, ctx.min_share, ctx.max_share),
                    {"steps": [p.step for p in ctx.history], "seen_loss": dict(ctx.history[-1].family_loss)})


def register_fixed_policy() -> None:
    from nemo_mlsl.registry import POLICIES

    POLICIES.register(FIXED_POLICY, fixed_policy)
    POLICIES.register(HISTORY_POLICY, history_policy)


def adaptive_run(request: Any, out: str | Path, stop_at: int | None = None, resume_at: int | None = None) -> dict[str, Any]:
    """An adaptive run in the order of Bridge's ``train()``: ``on_train_start``, then each step's forward passes
    (megatron's pipeline schedule over Bridge's training iterator, as ``training_steps``), the step counters advanced,
    and at every ``eval_interval`` Bridge's ``evaluate_and_print_results`` with the run's callbacks (the family
    callback, then the adaptive one, which extends the training set there). ``stop_at``: after that step's evaluation,
    Bridge's checkpoint is saved (``on_checkpoint_save`` fires) and the run ends. ``resume_at``: the run starts as
    Bridge resumes one, its train state restored to that step before ``on_data_init_start`` and the data iterators
    (the stand-in model has no weights to restore). Writes this rank's training batches, its decided schedule and the
    record to ``out/rank<k>.json``."""
    from megatron.bridge.data.loaders import build_train_valid_test_data_iterators
    from megatron.bridge.data.utils import get_dataset_provider
    from megatron.bridge.training.callbacks import CallbackContext, CallbackManager
    from megatron.bridge.training.config import runtime_config_update
    from megatron.bridge.training.eval import evaluate_and_print_results
    from megatron.bridge.training.state import GlobalState
    from megatron.bridge.training.tokenizers.tokenizer import build_tokenizer
    from megatron.bridge.training.utils.pg_utils import get_pg_collection
    from megatron.bridge.training.utils.train_utils import prepare_forward_step_func
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from mlsl_bridge.train import build_run

    register_fixed_policy()
    built = build_run(request)
    cfg = built.run.config
    assert cfg.dataset.num_workers == 0  # an adaptive run's loader reads no further ahead than the step it trains
    cfg.dataset.pin_memory, cfg.dataset.persistent_workers = False, False
    with cuda_on_cpu():
        runtime_config_update(cfg)
        cfg.dataset.tokenizer = build_tokenizer(cfg.tokenizer)
        state = GlobalState()
        state.cfg = cfg
        manager = CallbackManager()
        manager.add(built.callbacks)
        if resume_at:
            state.train_state.step = resume_at
            state.train_state.consumed_train_samples = resume_at * cfg.train.global_batch_size
        manager.fire("on_data_init_start", CallbackContext(state=state, model=[], user_state=manager.user_state))
        train_iterator, valid, _ = build_train_valid_test_data_iterators(cfg, state.train_state,
                                                                         get_dataset_provider(cfg.dataset),
                                                                         parallel_state.get_data_parallel_group())
        if cfg.model.pipeline_dtype is None:
            cfg.model.pipeline_dtype = torch.float32
        model = StubGPT(cfg.model)
        pg = get_pg_collection([model])
        recording = _Recording(train_iterator)
        step_fn = prepare_forward_step_func(built.forward_step, state)
        forward_backward = get_forward_backward_func(pp_size=pg.pp.size(), vp_size=cfg.model.virtual_pipeline_model_parallel_size)
        microbatches = cfg.train.global_batch_size // (cfg.train.micro_batch_size * pg.dp.size())
        manager.fire("on_train_start", CallbackContext(state=state, model=[model], user_state=manager.user_state))
        while state.train_state.step < cfg.train.train_iters:
            model.train()
            forward_backward(forward_step_func=step_fn, data_iterator=recording, model=[model],
                             num_microbatches=microbatches, seq_length=cfg.model.seq_length,
                             micro_batch_size=cfg.train.micro_batch_size, forward_only=True)
            state.train_state.step += 1
            state.train_state.consumed_train_samples += cfg.train.global_batch_size
            if state.train_state.step % cfg.validation.eval_interval == 0:
                model.eval()
                evaluate_and_print_results(state, f"iteration {state.train_state.step}", built.forward_step, valid,
                                           [model], cfg.model, write_to_tensorboard=False, callback_manager=manager)
            if state.train_state.step == stop_at:  # Bridge saves its checkpoint after the step's evaluation
                manager.fire("on_checkpoint_save", CallbackContext(state=state, model=[model], user_state=manager.user_state))
                break
    rank = torch.distributed.get_rank()
    result = {"rank": rank, "record": built.callback.record, "schedule": cfg.dataset.live.schedule.to_dict(),
              "losses": {str(k): v for k, v in built.adaptive.losses.items()},
              "train_batches": [{k: v.tolist() for k, v in b.items() if k == "dataset_id"} for b in recording.batches],
              "train_languages": cfg.dataset.live.train_languages,
              "stage": [parallel_state.get_pipeline_model_parallel_rank(), parallel_state.get_data_parallel_rank()]}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    return result


def adaptive_worker(rank: int, world: int, port: int, request: Any, out: str, pp: int = 1, stop_at: int | None = None,
                    resume_at: int | None = None) -> None:
    """One rank of DP x PP running ``adaptive_run`` (``torch.multiprocessing.spawn`` target)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(1, pp)
    try:
        adaptive_run(request, out, stop_at=stop_at, resume_at=resume_at)
    finally:
        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()

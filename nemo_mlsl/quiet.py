"""The known, harmless import-time noise of the training stack, silenced at the CLI entry point (``mlsl --verbose``
shows everything). Each entry names what it hides, down to the message: any other warning or log line, of the
same logger too, still shows."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

# (category, message regex, why it is harmless here)
KNOWN_WARNINGS = [
    (FutureWarning, r"The pynvml package is deprecated", "torch.cuda imports pynvml on machines without a GPU too"),
    (UserWarning, r"Transformer Engine and Apex are not installed", "megatron-core falls back to its own kernels: the CPU path and local layers"),
    (UserWarning, r"Failed to create unified memory mempool", "megatron-core's inference context, unused in training"),
    (DeprecationWarning, r"The following imports from `dynamic_context.py`", "megatron-core's own deprecation notice"),
    (UserWarning, r"Apex is not installed", "NeMo's optional fused kernels"),
    (UserWarning, r"The `srun` command is available on your system but is not used", "Lightning on a Slurm login node"),
    (UserWarning, r".*does not have many workers.*", "CPU runs use in-process data loading on purpose"),
    (DeprecationWarning, r"`torch.jit.script_method` is deprecated", "megatron-core imports"),
    (UserWarning, r"Only transformer-engine>=1.7.0 supports MoE experts", "megatron-core without TE; no MoE here"),
    (UserWarning, r"MimoModelConfig is experimental", "Megatron-Bridge's model zoo, imported with the package"),
    (UserWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning's pytree shim"),
]
# (logger, message regex, why it is harmless here): only these lines are dropped, every other line of the same logger shows
KNOWN_LOG_MESSAGES = [
    ("megatron.core.utils", r"has reached end of life\. Please migrate to a non-experimental function",
     "megatron-core marks an experimental helper it imports itself"),
    ("nemo_logger", r"The (deploy|evaluate) module could not be imported", "NeMo's optional collections, unused here"),
    ("nemo.collections.llm.gpt.model.megatron.hyena.hyena_mixer", r"transformer_engine not installed",
     "NeMo's Hyena models, imported with the LLM collection; no Hyena here"),
    ("nv_one_logger.api.config", r"OneLogger: Setting error_handling_strategy", "NeMo's telemetry, off"),
    ("nv_one_logger.training_telemetry.api.training_telemetry_provider", r"No exporters were provided",
     "NeMo's telemetry, off"),
    ("megatron.core.datasets.blended_megatron_dataset_config", r"^Let (mock|split|split_matrix) = |^blend not provided for ",
     "megatron deriving a dataset config's defaults (a dry run without --data uses its mock dataset, and says so itself)"),
    ("lightning.pytorch.utilities.rank_zero", r"^(GPU|TPU|HPU) available: |^💡 Tip: ",
     "Lightning's device report: the CPU path says which device it uses itself"),
    ("lightning.fabric.utilities.rank_zero", r"^(GPU|TPU|HPU) available: |^💡 Tip: ", "the same, from Lightning Fabric"),
    ("lightning.pytorch.trainer.connectors.signal_connector", r"^\[rank: \d+\] Received SIGTERM: ",
     "Lightning's note of a SIGTERM: mlsl says it itself, with what to do (nemo_mlsl.interrupts)"),
]
# loggers that only report optional imports, and set their own level and handler at import (a level set here would be
# overridden): switched off
DISABLED_LOGGERS = ["megatron.bridge.utils.import_utils"]  # Bridge's optional-import reports (FP8 without TransformerEngine)
# Megatron-Bridge's model zoo logs a registration line per model at import; its logger says nothing else in a study
QUIET_LOGGERS = ["megatron.bridge.models"]


# Modules that third-party code imports if it can, which nemo-mlsl never uses, and which change the process when imported:
# wandb replaces sys.stdout's and sys.stderr's write at import (megatron.core.timers imports it), so every line we print
# went through wandb's console capture, and a closed pipe (`mlsl blend | head`) ended in a traceback from inside it.
UNUSED_IMPORTS = {"wandb": "megatron-core imports it if installed (timers); nemo-mlsl logs to TensorBoard, never to W&B"}


def keep_out_unused_imports() -> None:
    """Make the ``UNUSED_IMPORTS`` fail to import (as if not installed; their importers fall back) unless already imported."""
    for name in UNUSED_IMPORTS:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # `import wandb` raises ImportError


class KnownMessages(logging.Filter):
    """Drops a logger's records whose message matches one of the known harmless patterns."""

    def __init__(self, patterns: list[str]):
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to drop
            return True
        return not self.pattern.search(message)


def silence_known_noise() -> None:
    for category, message, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    by_logger: dict[str, list[str]] = {}
    for name, message, _why in KNOWN_LOG_MESSAGES:
        by_logger.setdefault(name, []).append(message)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, KnownMessages) for f in logger.filters):
            logger.addFilter(KnownMessages(patterns))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in DISABLED_LOGGERS:
        logging.getLogger(name).disabled = True
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

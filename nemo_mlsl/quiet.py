"""The known, harmless import-time noise of the training stack, silenced at the CLI entry point (``mlsl --verbose``
shows everything). Each entry names what it hides; any other warning still shows."""

from __future__ import annotations

import logging
import os
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
# loggers whose INFO/WARNING lines at import or startup say nothing actionable for a study
QUIET_LOGGERS = ["megatron.core.utils", "megatron.core.datasets", "nemo_logger", "NeMo", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero", "torch.distributed.nn.jit.instantiator", "nv_one_logger",
                 # Megatron-Bridge: optional-import reports (FP8 without TransformerEngine) and model-zoo registrations
                 "megatron.bridge.models", "megatron.core.rerun_state_machine"]
# loggers that set their own level and handler at import (so a level set here would be overridden): switched off
DISABLED_LOGGERS = ["megatron.bridge.utils.import_utils"]  # Bridge's optional-import reports (FP8 without TransformerEngine)


def silence_known_noise() -> None:
    for category, message, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in DISABLED_LOGGERS:
        logging.getLogger(name).disabled = True
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

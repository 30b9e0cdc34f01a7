"""Make ``megatron.bridge`` importable where TransformerEngine is absent (a CPU box, a GPU box without TE).

Bridge's LoRA module imports TransformerEngine unconditionally, and ``import megatron.bridge`` reaches it
through the PEFT package. Pretraining never builds LoRA adapters, so when TE does not import we register
a narrow stand-in for that one module: its classes exist (other modules subclass and import them) and
refuse to be instantiated. megatron-core itself runs without TE (local layers). Call ``ensure_importable()``
before the first ``import megatron.bridge``; with TE installed it does nothing.

``training/pretrain.py`` imports ``nvidia_resiliency_ext.inprocess.CallWrapper`` for a type hint only (used when
in-process restart is on, which nemo-mlsl never turns on). The index's nvidia-resiliency-ext is older than
megatron-core accepts, and a package that merely exists would switch megatron-core's own NVRx checks on, so
``import_pretrain()`` imports everything else first and lends that one name only while ``pretrain.py`` loads.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from typing import Callable, Iterator

LORA_MODULE = "megatron.bridge.peft.lora_layers"
LORA_CLASSES = ("LoRALinear", "LoRATopKRouter", "TEFusedLoRALinear", "LinearAdapter")


def have_te() -> bool:
    """Whether TransformerEngine's PyTorch part is installed (found, not imported: importing it is slow)."""
    try:
        return importlib.util.find_spec("transformer_engine") is not None and \
            importlib.util.find_spec("transformer_engine.pytorch") is not None
    except (ImportError, ValueError):
        return False


def _refusing_class(name: str) -> type:
    import torch.nn as nn

    def __init__(self, *args, **kwargs):
        raise ImportError(f"{name} (Megatron-Bridge LoRA) needs TransformerEngine, which is not installed here; "
                          "nemo-mlsl pretrains without adapters")

    return type(name, (nn.Module,), {"__init__": __init__, "__module__": LORA_MODULE,
                                     "__doc__": "Stand-in: LoRA needs TransformerEngine."})


def ensure_importable() -> bool:
    """Register the LoRA stand-in if TE is absent and Bridge's own module is not loaded yet; True if it did."""
    if have_te() or LORA_MODULE in sys.modules:
        return False
    module = types.ModuleType(LORA_MODULE, "nemo-mlsl stand-in for Bridge's LoRA layers (TransformerEngine absent)")
    for name in LORA_CLASSES:
        setattr(module, name, _refusing_class(name))
    module.MLSL_STANDIN = True
    sys.modules[LORA_MODULE] = module
    return True


NVRX = "nvidia_resiliency_ext"
PRETRAIN_DEPENDENCIES = (
    "megatron.bridge.data.utils", "megatron.bridge.training.callbacks", "megatron.bridge.training.config",
    "megatron.bridge.training.eval", "megatron.bridge.training.initialize", "megatron.bridge.training.setup",
    "megatron.bridge.training.state", "megatron.bridge.training.train", "megatron.bridge.training.utils.log_utils",
    "megatron.bridge.utils.common_utils", "megatron.bridge.utils.decorators",
)


@contextlib.contextmanager
def _lend_call_wrapper() -> Iterator[None]:
    if importlib.util.find_spec(NVRX) is not None:
        yield
        return
    parent = types.ModuleType(NVRX, "nemo-mlsl stand-in, present only while Bridge's pretrain.py is imported")
    inprocess = types.ModuleType(f"{NVRX}.inprocess")
    inprocess.CallWrapper = type("CallWrapper", (), {"__doc__": "Stand-in type hint (in-process restart needs NVRx)."})
    parent.inprocess = inprocess
    sys.modules[NVRX], sys.modules[f"{NVRX}.inprocess"] = parent, inprocess
    try:
        yield
    finally:
        sys.modules.pop(f"{NVRX}.inprocess", None)
        sys.modules.pop(NVRX, None)


def import_pretrain() -> Callable:
    """``megatron.bridge.training.pretrain.pretrain``, importable without nvidia-resiliency-ext."""
    ensure_importable()
    for name in PRETRAIN_DEPENDENCIES:
        importlib.import_module(name)
    with _lend_call_wrapper():
        from megatron.bridge.training.pretrain import pretrain
    return pretrain

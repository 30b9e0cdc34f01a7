"""The transformer layer implementation, chosen where the model is built (the GPU node), not where the
recipe is built (maybe a login node without TransformerEngine).

``model.transformer_impl`` in a recipe: ``auto`` (TransformerEngine layers and fusions where TE imports,
megatron-core's local layers otherwise), ``transformer_engine`` (required: a clear error without it), or
``local``. The choice made is left on the config as ``mlsl_transformer_impl`` for the run's hparams and record.
"""

from __future__ import annotations

from typing import Any

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.model_config import TE_FUSIONS

__all__ = ["SPECS", "TE_FUSIONS", "auto_layer_spec", "local_layer_spec", "te_layer_spec"]

def have_te() -> bool:
    from nemo.collections.llm.gpt.model.base import HAVE_TE

    return bool(HAVE_TE)


def _local(config: Any):
    from nemo.collections.llm.gpt.model.base import local_layer_spec

    for name in TE_FUSIONS:
        if hasattr(config, name):
            setattr(config, name, False)
    config.mlsl_transformer_impl = "local"
    return local_layer_spec(config)


def _te(config: Any):
    from nemo.collections.llm.gpt.model.base import transformer_engine_layer_spec

    config.mlsl_transformer_impl = "transformer_engine"
    return transformer_engine_layer_spec(config)


def auto_layer_spec(config: Any, vp_stage: int | None = None):
    """TransformerEngine layers where TE imports, local ones otherwise."""
    return _te(config) if have_te() else _local(config)


def te_layer_spec(config: Any, vp_stage: int | None = None):
    if not have_te():
        raise ConfigError("model.transformer_impl=transformer_engine, but transformer_engine does not import on this "
                          "node; install it (NVIDIA's NeMo containers have it) or use transformer_impl=auto or local")
    return _te(config)


def local_layer_spec(config: Any, vp_stage: int | None = None):
    """megatron-core's own layers: no TransformerEngine or Apex needed (slower: no fused attention or kernels)."""
    return _local(config)


SPECS = {"auto": auto_layer_spec, "transformer_engine": te_layer_spec, "local": local_layer_spec}

"""Megatron-Bridge adapters: rung → ``ConfigContainer``, a forward step with per-language validation entries,
the family callback (TensorBoard, record, live fit), a training entry and the study backend.

Importing this package does not import Bridge; it makes ``import megatron.bridge`` work where TransformerEngine
is absent (``compat.ensure_importable``), so import it first.
"""

from mlsl_bridge.compat import ensure_importable

ensure_importable()

"""Sampling ratios over families (and over languages within a family).

A mixture is a function ``fn(ctx: MixtureContext, arg: str | None) -> {name: ratio}`` published
under the ``nemo_mlsl.mixtures`` entry-point group; specs are written ``name`` or ``name:arg``
(``temperature:3``, ``unimax:4``, ``from_fit:out/fit/optimal.json``).
"""

from nemo_mlsl.mixtures.core import (
    MixtureContext,
    check_epochs,
    check_spec,
    compute_mixture,
    data_caps,
    language_weights,
    parse_ratios,
    validate_ratios,
)

__all__ = [
    "MixtureContext",
    "check_epochs",
    "check_spec",
    "compute_mixture",
    "data_caps",
    "language_weights",
    "parse_ratios",
    "validate_ratios",
]

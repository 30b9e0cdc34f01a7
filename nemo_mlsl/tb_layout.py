"""TensorBoard's custom-scalars layout (one multi-line chart per metric across families) and hparams, for
every backend's writer (a ``SummaryWriter``)."""

from __future__ import annotations

from typing import Any, Mapping


def custom_scalars_layout() -> dict[str, dict[str, list]]:
    return {
        "families": {
            "validation loss": ["Multiline", [r"val_family/.*/loss"]],
            "validation bits per byte": ["Multiline", [r"val_family/.*/bpb"]],
            "realized mixture": ["Multiline", [r"mixture/.*/ratio"]],
            "epochs of data": ["Multiline", [r"mixture/.*/epochs"]],
        },
        "languages": {
            "validation loss": ["Multiline", [r"val_language/.*/loss"]],
            "validation bits per byte": ["Multiline", [r"val_language/.*/bpb"]],
        },
    }


def write_hparams(writer: Any, hparams: Mapping[str, Any]) -> None:
    """The run's hparams for TensorBoard's HParams view, in the writer's own run directory (not a sub-run, as
    ``SummaryWriter.add_hparams`` would make)."""
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    file_writer = writer._get_file_writer()
    for summary in hparams_summary(clean, {}):
        file_writer.add_summary(summary)

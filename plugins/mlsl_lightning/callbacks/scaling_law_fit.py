"""``ScalingLawFitCallback``: at a run's final validation, append its record to the study's results
store, refit the law once enough runs exist, rewrite the report, and log the fit to TensorBoard.

It never fails the training run: a fit that cannot be made yet (too few runs), or any other error
while recording, fitting or logging, is reported in the log and as TensorBoard text (``fit/status``).
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger

from nemo_mlsl.analysis import fit_and_report
from nemo_mlsl.errors import FitError, MLSLError
from nemo_mlsl.results import ResultsStore

log = logging.getLogger("nemo_mlsl.fit_callback")


class ScalingLawFitCallback(pl.Callback):
    def __init__(
        self,
        store: str | Path,
        report_dir: str | Path,
        make_record: Callable[[pl.Trainer], Mapping[str, Any] | None],
        *,
        law: str | None = "joint_family",
        bootstrap: int = 50,
        tokens: Mapping[str, float] | None = None,
        fit_kwargs: Mapping[str, Any] | None = None,
        figures: tuple[str, ...] | None = ("loss_vs_ratio",),
    ):
        self.store = ResultsStore(store)
        self.report_dir = Path(report_dir)
        self.make_record = make_record
        self.law = law
        self.bootstrap = bootstrap
        self.tokens = dict(tokens or {})
        self.fit_kwargs = {"figures": figures, **(fit_kwargs or {})}
        self.report = None
        self.status = "not run"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_step < (trainer.max_steps or 0) or trainer.global_rank != 0:
            return
        record = None
        try:
            record = self.make_record(trainer)
            if record is None:
                return
            self.store.append(record, skip_existing=True)
            if not self.law:
                return
            records = self.store.read(dedupe=True)
            try:
                self.report = fit_and_report(records, self.report_dir, law=self.law, bootstrap=self.bootstrap, tokens=self.tokens,
                                             **self.fit_kwargs)
                self.status = f"fitted {self.law} to {len(records)} runs"
            except FitError as err:
                self.report, self.status = None, f"no fit yet: {err}"
        except Exception as err:  # noqa: BLE001 - a failed fit or record must never fail the training run
            self.report = None
            kind = "" if isinstance(err, MLSLError) else f" ({type(err).__name__})"
            self.status = f"fit callback error{kind}: {err}"
            log.error("%s\n%s", self.status, "" if isinstance(err, MLSLError) else traceback.format_exc())
        try:
            self._log(trainer, record)
        except Exception as err:  # noqa: BLE001
            log.error("fit callback: could not log to TensorBoard (%s: %s)", type(err).__name__, err)

    def _log(self, trainer: pl.Trainer, record: Mapping[str, Any] | None) -> None:
        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is None:
            return
        w, step = tb.experiment, trainer.global_step
        w.add_text("fit/status", self.status, step)
        if self.report is None or record is None:
            return
        doc = self.report.doc
        for fam, entry in doc["families"].items():
            for name, value in entry["params"].items():
                if not name.startswith("log_Lstar"):
                    w.add_scalar(f"fit/{fam}/{name}", value, step)
        if record["run_id"] in self.report.lawfit.obs.run_ids:
            i = self.report.lawfit.obs.run_ids.index(record["run_id"])
            for fam in self.report.lawfit.fits:
                w.add_scalar(f"fit/{fam}/predicted_loss", float(self.report.lawfit.predict(self.report.lawfit.obs.subset([i]), fam)[0]), step)
                w.add_scalar(f"fit/{fam}/observed_loss", float(record["family_loss"][fam]), step)
        if self.report.optimal:
            for fam, p in self.report.optimal["ratios"].items():
                w.add_scalar(f"fit/optimal_ratio/{fam}", p, step)
        w.add_text("fit/report", (self.report_dir / "report.md").read_text(), step)
        import matplotlib.image as mpimg

        png = self.report_dir / "loss_vs_ratio.png"
        if png.exists():
            img = mpimg.imread(png)[..., :3]
            w.add_image("fit/loss_vs_ratio", np.transpose(img, (2, 0, 1)), step)

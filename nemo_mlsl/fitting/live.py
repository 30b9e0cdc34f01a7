"""The live fit every backend runs at a run's final validation: append the run's record to the study's
results store, refit the law once enough runs exist, rewrite the report, and log the fit to TensorBoard.

It never fails the training run: a fit that cannot be made yet (too few runs), or any other error while
recording, fitting or logging, is reported in the log and as TensorBoard text (``fit/status``). The
backends' callbacks (Lightning/NeMo, Megatron-Bridge) only find the record and the writer.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nemo_mlsl.fitting.report import fit_and_report
from nemo_mlsl.errors import FitError, MLSLError
from nemo_mlsl.results import ResultsStore

log = logging.getLogger("nemo_mlsl.fit_callback")


class LiveFit:
    def __init__(self, store: str | Path, report_dir: str | Path, *, law: str | None = "joint_family", bootstrap: int = 50,
                 tokens: Mapping[str, float] | None = None, fit_kwargs: Mapping[str, Any] | None = None,
                 figures: tuple[str, ...] | None = ("loss_vs_ratio",)):
        self.store = ResultsStore(store)
        self.report_dir = Path(report_dir)
        self.law = law
        self.bootstrap = bootstrap
        self.tokens = dict(tokens or {})
        self.fit_kwargs = {"figures": figures, **(fit_kwargs or {})}
        self.report = None
        self.status = "not run"

    def record(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (once per run id) and refit; the outcome is in ``status`` and ``report``."""
        try:
            self.store.append(dict(record), skip_existing=True)
            if not self.law:
                self.status = "recorded (no law to fit)"
                return
            records = self.store.read(dedupe=True)
            try:
                self.report = fit_and_report(records, self.report_dir, law=self.law, bootstrap=self.bootstrap, tokens=self.tokens,
                                             **self.fit_kwargs)
                self.status = f"fitted {self.law} to {len(records)} runs"
            except FitError as err:
                self.report, self.status = None, f"no fit yet: {err}"
        except Exception as err:  # noqa: BLE001 - a failed fit or record must never fail the training run
            self.fail(err)

    def fail(self, err: BaseException) -> None:
        self.report = None
        kind = "" if isinstance(err, MLSLError) else f" ({type(err).__name__})"
        self.status = f"fit callback error{kind}: {err}"
        log.error("%s\n%s", self.status, "" if isinstance(err, MLSLError) else traceback.format_exc())

    def log_to(self, writer: Any, step: int, record: Mapping[str, Any] | None) -> None:
        """``fit/*`` scalars, the report and the figure on a TensorBoard ``SummaryWriter``; never raises."""
        try:
            self._log(writer, step, record)
        except Exception as err:  # noqa: BLE001
            log.error("fit callback: could not log to TensorBoard (%s: %s)", type(err).__name__, err)

    def _log(self, w: Any, step: int, record: Mapping[str, Any] | None) -> None:
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
                if fam not in record["family_loss"]:
                    continue  # the run was not evaluated on this family (a share alone)
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

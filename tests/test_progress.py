"""Progress output piped to a file or a log: one line per event, never carriage-return redraws running together."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

from nemo_mlsl.study.progress import StudyProgress
from nemo_mlsl.terminal import interactive


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_interactive_only_on_a_terminal():
    assert interactive(_Tty()) is True
    assert interactive(io.StringIO()) is False
    closed = io.StringIO()
    closed.close()
    assert interactive(closed) is False


def test_study_progress_logs_lines_when_piped(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    lines: list[str] = []
    bar = StudyProgress(3, True, lines.append)
    assert bar.bar is None  # no bar to redraw off a terminal
    bar.write("phase 1: 3 of 3 runs to train")
    bar.done(SimpleNamespace(run_id="r0"), {"family_loss": {"amber": 2.5}})
    bar.close()
    assert lines[0] == "phase 1: 3 of 3 runs to train" and lines[1].startswith("[1/3] r0 done  amber=2.500")
    assert "\r" not in err.getvalue()


def test_prepare_with_progress_writes_whole_lines_when_piped(tmp_path, capfd):
    from nemo_mlsl.data.prepare import PrepareConfig, prepare
    from nemo_mlsl.data.synth import SynthConfig, generate

    generate(SynthConfig(families=2, languages_per_family=1, docs=20, seed=0), tmp_path / "raw")
    capfd.readouterr()
    prepare(PrepareConfig(inputs=[str(tmp_path / "raw")], out=str(tmp_path / "data"), families_yaml=str(tmp_path / "raw/families.yaml"),
                          vocab_size=256, workers=1, progress=True))
    out, err = capfd.readouterr()
    text = out + err
    assert "tokenizer: trained in" in text
    assert "\r" not in text and text.count("tokenizer: training") <= 1

"""The CLI hides the stack's known import-time lines by message, never a whole logger: any other line of the same
logger still shows, and no third-party logger's level is changed."""

import logging
import subprocess
import sys

import pytest

from conftest import require_nemo
from nemo_mlsl.quiet import KNOWN_LOG_MESSAGES, silence_known_noise


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_known_lines_are_dropped_and_every_other_line_of_the_same_logger_shows():
    samples = {"megatron.core.utils": "fused_indices_to_multihot has reached end of life. Please migrate to a non-experimental function.",
               "nemo_logger": "The deploy module could not be imported: cannot import name 'deploy'",
               "lightning.pytorch.utilities.rank_zero": "GPU available: False, used: False"}
    levels = {name: logging.getLogger(name).level for name, _, _ in KNOWN_LOG_MESSAGES}
    silence_known_noise()
    silence_known_noise()  # twice (a second CLI call in one process): one filter per logger
    for name, known in samples.items():
        logger, keep = logging.getLogger(name), _Keep()
        logger.addHandler(keep)
        try:
            logger.warning(known)
            logger.warning("checkpoint directory %s is not writable", "/x")  # a real warning of the same logger
        finally:
            logger.removeHandler(keep)
        assert keep.lines == ["checkpoint directory /x is not writable"], (name, keep.lines)
        assert len(logger.filters) == 1
    assert {name: logging.getLogger(name).level for name, _, _ in KNOWN_LOG_MESSAGES} == levels


@pytest.mark.slow
def test_importing_nemo_after_silencing_prints_none_of_the_known_lines():
    require_nemo()
    code = ("import sys; from nemo_mlsl.quiet import silence_known_noise\n"
            "if sys.argv[1] == 'quiet': silence_known_noise()\n"
            "import nemo.collections.llm, logging; logging.getLogger('nemo_logger').warning('a line of our own')\n")
    loud, quiet = (subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True) for mode in ("loud", "quiet"))
    assert "The deploy module could not be imported" in loud.stderr + loud.stdout  # what there is to hide
    assert "could not be imported" not in quiet.stderr + quiet.stdout and "a line of our own" in quiet.stderr + quiet.stdout

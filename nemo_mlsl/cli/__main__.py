"""``python -m nemo_mlsl.cli``: the ``mlsl`` command (jobs and torchrun launch it this way)."""

import sys

from nemo_mlsl.cli import main

sys.exit(main())

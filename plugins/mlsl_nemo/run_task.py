"""``python -m mlsl_nemo.run_task TASK``: run one serialized NeMo task (``run.Partial(llm.pretrain, ...)``) in this process.

Each NeMo run of an in-process study gets a fresh process: megatron keeps global state (the microbatch
calculator, parallel groups) that a second ``llm.pretrain`` in the same process trips over when the batch
shape changes. The task file is NeMo-Run's own serialization (what its executors ship to a job).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def save_task(task: Any, path: str | Path) -> Path:
    from nemo_run.core.serialization.zlib_json import ZlibJSONSerializer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ZlibJSONSerializer().serialize(task))
    return path


def load_task(path: str | Path) -> Any:
    from nemo_run.core.serialization.zlib_json import ZlibJSONSerializer

    return ZlibJSONSerializer().deserialize(Path(path).read_text())


def run_task(task: Any) -> Any:
    import fiddle as fdl

    return fdl.build(task)()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mlsl_nemo.run_task TASK_FILE", file=sys.stderr)
        return 2
    from nemo_mlsl.quiet import silence_known_noise

    silence_known_noise()
    run_task(load_task(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

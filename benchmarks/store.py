"""The results store at scale: the cost of one append at 10 and at 100,000 records, and reading 1,000,000 records in
bounded memory, each against a reference measured in the same run.

- **append**: ``ResultsStore.append`` (locked, fsynced, duplicate run ids refused, through the sidecar index) on stores
  of ``--small`` and ``--large`` records, against the store's previous algorithm, kept here as the reference: under the
  same lock, re-read and validate the whole store to refuse a duplicate, then write and fsync the line. Each store is
  first written by another tool (a plain file write) and indexed once by the first append (its cost is printed too).
- **two writers**: two processes appending ``--writers`` records each to one store (the issue measured ~150 s for
  1,500 each with the reference).
- **read**: streaming ``iter_records`` over ``--read`` records: its wall time and the peak of the reading process's
  memory (max RSS, in a fresh process), against ``read()`` (a list of every record) at a tenth of the size.

Every figure is measured on a machine others load too: ratios in one run are what to compare.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nemo_mlsl.errors import ConfigError
from nemo_mlsl.results import ResultsStore, validate_record


def _shares(i: int, fams: list[str]) -> dict[str, float]:
    """A mixture that varies from run to run (so the fit below has something to fit), summing to 1."""
    w = [1.0 + (i * (k + 3)) % 11 for k in range(len(fams))]
    return {f: x / sum(w) for f, x in zip(fams, w)}


def record(i: int) -> dict:
    """A record of the size `mlsl train` writes (per-language losses, token counts): about 1 kB."""
    fams = [f"fam{k}" for k in range(5)]
    langs = [f"l{k:02d}" for k in range(15)]
    return {"run_id": f"run-{i:07d}", "N": 1.3e6, "D": 2.0e8, "recipe": "cpu_100k", "seed": i % 7,
            "ratios": _shares(i, fams), "family_loss": {f: 3.0 + 0.01 * (i % 97) + 0.1 * k for k, f in enumerate(fams)},
            "family_bpb": {f: 1.5 + 0.001 * (i % 89) for f in fams}, "language_loss": {l: 3.1 + 0.001 * (i % 83) for l in langs},
            "family_tokens": {f: 10_000_000 + k for k, f in enumerate(fams)}, "purpose": "design", "phase": 1}


def write_plain(path: Path, n: int, start: int = 0) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(start, start + n):
            fh.write(json.dumps(record(i), sort_keys=True) + "\n")


def reference_append(store: ResultsStore, rec: dict) -> None:
    """The store's append before the index: the whole store re-read and validated under the lock, every time."""
    validate_record(rec)
    line = (json.dumps(rec, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    with store.lock:
        existing = set()
        for lineno, text in enumerate(store.path.read_text(encoding="utf-8").split("\n"), 1):
            if text.strip():
                r = json.loads(text)
                validate_record(r, f"{store.path}:{lineno}")
                existing.add(r["run_id"])
        if rec["run_id"] in existing:
            raise ConfigError(f"run_id {rec['run_id']!r} is already in {store.path}")
        fd = os.open(store.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def time_appends(path: Path, n: int, appends: int, reference: bool) -> tuple[float, float]:
    """(seconds of the first, indexing, append; mean seconds of the next ``appends``) on a store of ``n`` records."""
    write_plain(path, n)
    store = ResultsStore(path)
    append = (lambda r: reference_append(store, r)) if reference else store.append
    t = time.perf_counter()
    append(record(10_000_000))
    first = time.perf_counter() - t
    t = time.perf_counter()
    for k in range(appends):
        append(record(10_000_001 + k))
    return first, (time.perf_counter() - t) / appends


def _writer(path: str, start: int, n: int) -> None:
    store = ResultsStore(path)
    for i in range(start, start + n):
        store.append(record(i))


READER = r"""
import json, sys, time
from nemo_mlsl.results import ResultsStore
store, mode = ResultsStore(sys.argv[1]), sys.argv[2]
store.run_ids()  # indexed already; this only opens it
open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
if mode == "fit":  # the store streamed into Observations, and a law fitted to every run
    from nemo_mlsl.fitting.lawfit import fit
    from nemo_mlsl.fitting.observations import Observations
    n = fit("loglinear", Observations.from_records(store.iter_records())).fits["fam0"].n_runs
else:
    n = sum(1 for _ in store.iter_records()) if mode == "stream" else len(store.read())
secs = time.perf_counter() - t
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"records": n, "seconds": secs, "rss_mb": peak / 1024}))
"""


def read_in_child(path: Path, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", READER, str(path), mode], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=10)
    ap.add_argument("--large", type=int, default=100_000)
    ap.add_argument("--appends", type=int, default=200, help="appends timed per store (the reference: --reference-appends)")
    ap.add_argument("--reference-appends", type=int, default=5)
    ap.add_argument("--writers", type=int, default=1500, help="records each of two processes appends")
    ap.add_argument("--read", type=int, default=1_000_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = {}
        for name, n in (("small", a.small), ("large", a.large)):
            rows[name] = time_appends(root / f"{name}.jsonl", n, a.appends, reference=False)
            rows[name + "_ref"] = time_appends(root / f"{name}_ref.jsonl", n, a.reference_appends if name == "large" else a.appends,
                                               reference=True)
        (_, s), (_, l) = rows["small"], rows["large"]
        (_, rs), (_, rl) = rows["small_ref"], rows["large_ref"]
        print(f"append, {a.small:,} records: {1e3 * s:.2f} ms; {a.large:,} records: {1e3 * l:.2f} ms; ratio {l / s:.2f} "
              f"(first append at {a.large:,}, indexing the store: {rows['large'][0]:.1f} s)")
        print(f"reference (whole store re-read per append), {a.small:,}: {1e3 * rs:.2f} ms; {a.large:,}: {1e3 * rl:.0f} ms; "
              f"ratio {rl / rs:.0f}; at {a.large:,} records the indexed append is {rl / l:.0f}x faster")

        path = root / "two.jsonl"
        t = time.perf_counter()
        procs = [mp.get_context("spawn").Process(target=_writer, args=(str(path), k * a.writers, a.writers)) for k in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - t
        ids = ResultsStore(path).run_ids()
        print(f"two processes x {a.writers:,} appends: {wall:.1f} s wall (process start included), {len(ids):,} distinct records")

        big = root / "big.jsonl"
        write_plain(big, a.read)
        t = time.perf_counter()
        ResultsStore(big).run_ids()
        index_s = time.perf_counter() - t
        stream = read_in_child(big, "stream")
        tenth = root / "tenth.jsonl"
        write_plain(tenth, a.read // 10)
        ResultsStore(tenth).run_ids()
        listed = read_in_child(tenth, "list")
        streamed_tenth = read_in_child(tenth, "stream")
        size = big.stat().st_size / 2**20
        print(f"read {stream['records']:,} records ({size:.0f} MiB): streamed in {stream['seconds']:.1f} s, peak RSS "
              f"{stream['rss_mb']:.0f} MB (indexing them first: {index_s:.1f} s, once)")
        print(f"  {listed['records']:,} records: streamed peak RSS {streamed_tenth['rss_mb']:.0f} MB, as a list (read()) "
              f"{listed['rss_mb']:.0f} MB")
        fitted = read_in_child(big, "fit")
        print(f"fit loglinear to all {fitted['records']:,} runs streamed from the store (5 targets): {fitted['seconds']:.1f} s, "
              f"peak RSS {fitted['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()

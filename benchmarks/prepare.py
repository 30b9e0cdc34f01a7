"""`mlsl prepare` throughput and memory against a plain single-process loop that writes the same output,
measured side by side in one run.

The loop is what one writes first: for each document, parse the JSON line, encode it with SentencePiece,
append its ids and the EOD to the ``.bin`` of its split, then write the ``.idx`` (the splits come from
``prepare``'s own seeded split, so both write identical files, which is checked). The corpus is the synthetic
8-language one at ``--docs`` documents per language (default 6000: 10x the default study's 600). The tokenizer
is given (trained once beforehand), so what is timed is reading, splitting, encoding and writing. Peak memory
(max RSS of the preparing process and of its workers) is measured at two corpus sizes: it must not grow with
the corpus.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
open("/proc/self/clear_refs", "w").write("5")  # peak RSS counts from here (a forked child starts with its parent's)
from nemo_mlsl.data.prepare import PrepareConfig, prepare
a = json.loads(sys.argv[1])
t = time.perf_counter()
prepare(PrepareConfig(inputs=[a["raw"]], out=a["out"], families_yaml=a["families"], tokenizer=a["tok"], workers=a["workers"], progress=False))
secs = time.perf_counter() - t
own = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": secs, "rss_mb": own / 1024, "worker_rss_mb": kids / 1024}))
"""


def run_prepare(raw: Path, out: Path, tok: str, workers: int) -> dict:
    arg = json.dumps({"raw": str(raw), "out": str(out), "families": str(raw / "families.yaml"), "tok": tok, "workers": workers})
    proc = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def split_documents(path: Path, seed: int):
    """(split, text) of every non-empty document of a .jsonl file, split as ``prepare`` splits (its seeded indices)."""
    from nemo_mlsl.data.documents import count_documents
    from nemo_mlsl.data.splits import split_indices

    val, test = (set(x.tolist()) for x in split_indices(count_documents(path), path.stem, seed, None))
    i = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            split = "validation" if i in val else "test" if i in test else "train"
            i += 1
            text = json.loads(line)["text"]
            if text.strip():
                yield split, text


class _OwnWriter:
    def __init__(self, prefix: str, dtype):
        self.prefix, self.dtype, self.fh, self.lengths = prefix, dtype, open(prefix + ".bin", "wb"), []

    def add(self, ids: np.ndarray) -> None:
        self.fh.write(ids.tobytes())
        self.lengths.append(len(ids))

    def finalize(self) -> None:
        from nemo_mlsl.data.indexed import write_index

        self.fh.close()
        write_index(self.prefix + ".idx", self.dtype, np.asarray(self.lengths, dtype=np.int32))


class _MegatronWriter:
    """megatron-core's ``IndexedDatasetBuilder``, what its preprocess_data writes with in each worker."""

    def __init__(self, prefix: str, dtype):
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        self.prefix, self.builder = prefix, IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)

    def add(self, ids: np.ndarray) -> None:
        self.builder.add_document(ids, [len(ids)])

    def finalize(self) -> None:
        self.builder.finalize(self.prefix + ".idx")


def single_process_loop(raw: Path, out: Path, model: str, writer, seed: int = 1234) -> float:
    """The single-process reference: parse, encode, write each document; same splits, same files. Returns seconds."""
    import sentencepiece as spm

    from nemo_mlsl.data.indexed import token_dtype

    t = time.perf_counter()
    sp = spm.SentencePieceProcessor(model_file=model)
    eod, dtype = sp.eos_id(), token_dtype(sp.get_piece_size())
    for path in sorted(raw.glob("*.jsonl")):
        writers = {s: writer(str(out / f"{s}_{path.stem}"), dtype) for s in ("train", "validation", "test")}
        for split, text in split_documents(path, seed):
            writers[split].add(np.asarray(sp.encode(text) + [eod], dtype=dtype))
        for w in writers.values():
            w.finalize()
    return time.perf_counter() - t


def encode_ceiling(raw: Path, model: str, processes: int) -> float:
    """Speed-up of encoding alone (SentencePiece, in memory) in ``processes`` processes over one: what the
    machine's cores give, the bound on any parallel prepare."""
    import multiprocessing as mp

    from nemo_mlsl.data.documents import read_documents

    docs = [d for path in sorted(raw.glob("*.jsonl")) for d in read_documents(path)]
    parts = [docs[i::processes] for i in range(processes)]
    global _MODEL
    _MODEL = model
    with mp.get_context("fork").Pool(processes) as pool:
        pool.map(_encode_all, [p[:10] for p in parts])  # start the workers and load the model
        t = time.perf_counter()
        pool.map(_encode_all, parts)
        par = time.perf_counter() - t
    t = time.perf_counter()
    _encode_all(docs)
    return (time.perf_counter() - t) / par


_MODEL = ""


def _encode_all(docs: list) -> int:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=_MODEL)
    return sum(len(ids) for ids in sp.encode(docs, num_threads=1))


def same_output(plain: Path, prepared: Path) -> bool:
    return all((plain / f"{p.parent.name}_{p.stem}{p.suffix}").read_bytes() == p.read_bytes()
               for split in ("train", "validation", "test") for p in (prepared / split).iterdir())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=6000)
    args = p.parse_args()
    from nemo_mlsl.data.prepare import PrepareConfig, prepare
    from nemo_mlsl.data.synth import SynthConfig, generate

    tmp = Path(tempfile.mkdtemp())
    generate(SynthConfig(families=4, languages_per_family=2, docs=args.docs, seed=1), tmp / "raw")
    generate(SynthConfig(families=4, languages_per_family=2, docs=args.docs // 4, seed=1), tmp / "raw_small")
    prepare(PrepareConfig(inputs=[str(tmp / "raw_small")], out=str(tmp / "tok"), families_yaml=str(tmp / "raw_small/families.yaml"),
                          vocab_size=1000, progress=False))
    model = str(tmp / "tok" / "tokenizer.model")
    mb = sum(p.stat().st_size for p in (tmp / "raw").glob("*.jsonl")) / 1e6
    (tmp / "plain").mkdir()
    (tmp / "megatron").mkdir()
    base = min(single_process_loop(tmp / "raw", tmp / "plain", model, _OwnWriter) for _ in range(2))
    mega = min(single_process_loop(tmp / "raw", tmp / "megatron", model, _MegatronWriter) for _ in range(2))
    cores = os.cpu_count() or 1
    ceiling = encode_ceiling(tmp / "raw", model, cores)
    rows = {w: min((run_prepare(tmp / "raw", tmp / f"w{w}-{k}", model, w) for k in range(2)), key=lambda r: r["seconds"])
            for w in sorted({1, cores})}
    small = run_prepare(tmp / "raw_small", tmp / "small", model, cores)
    big = run_prepare(tmp / "raw", tmp / "big", model, cores)
    mb_small = sum(p.stat().st_size for p in (tmp / "raw_small").glob("*.jsonl")) / 1e6
    n = sum(v["tokens"] for lang in json.loads((tmp / f"w{cores}-0" / "manifest.json").read_text())["languages"].values()
            for v in lang["splits"].values())
    same = all(same_output(tmp / ref, tmp / f"w{w}-0") for w in rows for ref in ("plain", "megatron"))
    print(f"corpus: {mb:.1f} MB of JSON lines, 8 languages x {args.docs} documents, {n:,} tokens")
    print(f"single-process loop, own writer (parse, encode, write .bin/.idx):  {mb / base:7.2f} MB/s")
    print(f"single-process loop, megatron-core's IndexedDatasetBuilder:        {mb / mega:7.2f} MB/s")
    for w, r in rows.items():
        print(f"mlsl prepare, {w} worker(s) (read, split, encode, write .bin/.idx, manifest): {mb / r['seconds']:7.2f} MB/s "
              f"= {base / r['seconds']:.2f}x the own-writer loop, {mega / r['seconds']:.2f}x the megatron loop; "
              f"peak RSS {r['rss_mb']:.0f} MB (+ workers {r['worker_rss_mb']:.0f} MB)")
    print(f"encoding alone in {cores} processes vs 1 (the machine's ceiling for any parallel prepare): {ceiling:.2f}x")
    print(f"peak RSS with {cores} workers at {mb_small:.1f} MB of input: {small['rss_mb']:.0f} MB (+ workers "
          f"{small['worker_rss_mb']:.0f} MB); at {mb:.1f} MB: {big['rss_mb']:.0f} MB (+ {big['worker_rss_mb']:.0f} MB)")
    print(f"identical .bin/.idx files: {same}")
    print(json.dumps({"same_output": same, "mb": mb, "plain_mb_s": mb / base, "megatron_mb_s": mb / mega, "ceiling": ceiling, **{f"prepare_{w}_mb_s": mb / r["seconds"] for w, r in rows.items()},
                      "ratio": base / rows[cores]["seconds"], "ratio_megatron": mega / rows[cores]["seconds"], "rss_mb": rows[cores]["rss_mb"], "rss_small_mb": small["rss_mb"]}))


if __name__ == "__main__":
    main()

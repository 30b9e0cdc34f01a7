"""MB/s of raw text turned into Megatron indexed datasets by `mlsl prepare` (tokenizer given, so encoding and
writing are what is timed) vs a plain single-process SentencePiece encode loop over the same text."""

import json
import os
import tempfile
import time
from pathlib import Path

import sentencepiece as spm

from nemo_mlsl.data.prepare import PrepareConfig, prepare, read_documents
from nemo_mlsl.data.synth import SynthConfig, generate


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    generate(SynthConfig(families=4, languages_per_family=2, docs=4000, seed=1), tmp / "raw")
    docs = [d for p in sorted((tmp / "raw").glob("*.jsonl")) for d in read_documents(p)]
    mb = sum(len(d.encode()) for d in docs) / 1e6
    # a tokenizer trained once, outside the timed region
    prepare(PrepareConfig(inputs=[str(tmp / "raw")], out=str(tmp / "tok"), families_yaml=str(tmp / "raw/families.yaml"),
                          vocab_size=1000, progress=False))
    model = str(tmp / "tok" / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=model)
    t = time.perf_counter()
    n = sum(len(sp.encode(d)) for d in docs)
    base = time.perf_counter() - t
    rows = {}
    for workers in (1, os.cpu_count() or 1):
        t = time.perf_counter()
        prepare(PrepareConfig(inputs=[str(tmp / "raw")], out=str(tmp / f"w{workers}"), families_yaml=str(tmp / "raw/families.yaml"),
                              tokenizer=model, workers=workers, progress=False))
        rows[workers] = time.perf_counter() - t
    print(f"corpus: {mb:.1f} MB of UTF-8 text, {len(docs)} documents, {n:,} tokens")
    print(f"plain SentencePiece encode loop (1 process): {mb / base:7.2f} MB/s")
    for w, secs in rows.items():
        print(f"mlsl prepare, {w} worker(s) (read, split, encode, write .bin/.idx, manifest): {mb / secs:7.2f} MB/s "
              f"= {base / secs:.2f}x the plain loop")
    print(json.dumps({"mb": mb, "plain_mb_s": mb / base, **{f"prepare_{w}_mb_s": mb / s for w, s in rows.items()}}))


if __name__ == "__main__":
    main()

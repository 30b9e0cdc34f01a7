"""Existing Megatron data (`mlsl prepare --indexed`) and any local tokenizer: data built the way a user builds it
(megatron-core's IndexedDatasetBuilder, a Hugging Face tokenizer.json), brought in without re-tokenizing or
touching the user's files, blended, and trained on with per-language validation and bits per byte."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import run_cli
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.errors import ConfigError, DataError


def write_tokenizer(path: Path, texts, vocab_size=300) -> Path:
    """A tiny BPE tokenizer.json, trained here on the texts (what a team's production tokenizer stands in for)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<pad>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


def build_indexed(prefix: Path, texts, tok, eod: int) -> None:
    """As Megatron's preprocess_data does (with --append-eod): one document per text, uint16 tokens."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.uint16)
    for t in texts:
        ids = tok.encode(t).ids + [eod]
        builder.add_document(np.array(ids, dtype=np.uint16), [len(ids)])
    builder.finalize(str(prefix) + ".idx")


def checksums(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    from tokenizers import Tokenizer

    from nemo_mlsl.data.documents import read_documents
    from nemo_mlsl.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("user")
    generate(SynthConfig(families=2, languages_per_family=2, docs=120, seed=7), root / "raw")
    texts = {p.stem: list(read_documents(p)) for p in sorted((root / "raw").glob("*.jsonl"))}
    path = write_tokenizer(root / "tokenizer.json", [t for ts in texts.values() for t in ts])
    tok = Tokenizer.from_file(str(path))
    eod = tok.token_to_id("</s>")
    megatron = root / "megatron"  # the team's existing data: never written to after this
    build_indexed(megatron / "qaa_text_document", texts["qaa"], tok, eod)
    build_indexed(megatron / "qab_text_document", texts["qab"], tok, eod)
    build_indexed(megatron / "qac_00_text_document", texts["qac"][:60], tok, eod)
    build_indexed(megatron / "qac_01_text_document", texts["qac"][60:], tok, eod)
    build_indexed(megatron / "qad_text_document", texts["qad"][:-20], tok, eod)
    build_indexed(megatron / "qad_val_text_document", texts["qad"][-20:], tok, eod)
    spec = {"languages": {
        "qaa": {"train": "megatron/qaa_text_document", "family": "amber"},
        "qab": {"train": str(megatron / "qab_text_document"), "family": "amber"},
        "qac": {"train": ["megatron/qac_00_text_document", "megatron/qac_01_text_document"], "family": "cobalt"},
        "qad": {"train": "megatron/qad_text_document", "validation": "megatron/qad_val_text_document", "family": "cobalt"},
    }}
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root, texts, checksums(megatron)


def test_existing_indexed_data_with_a_hugging_face_tokenizer(user_data, tmp_path):
    root, texts, before = user_data
    proc = run_cli("prepare", "--indexed", root / "spec.yaml", "--tokenizer", root / "tokenizer.json", "--out", tmp_path / "data",
                   "--val-docs", "10")
    assert "4 languages, 2 families" in proc.stdout and "(huggingface)" in proc.stdout
    m = Manifest.load(tmp_path / "data")
    assert m.tokenizer_kind == "huggingface" and m.tokenizer_sha256 == hashlib.sha256((root / "tokenizer.json").read_bytes()).hexdigest()
    assert (tmp_path / "data" / "tokenizer" / "tokenizer.json").exists()
    # counts come from the .idx files; the carved validation split leaves the training index
    assert m.stats("qaa", "validation").documents == 10 and m.stats("qaa", "train").documents == len(texts["qaa"]) - 10
    assert m.stats("qad", "validation").documents == 20 and m.stats("qad", "train").documents == len(texts["qad"]) - 20
    assert [p.documents for p in m.parts("qac", "train")] == [60 - 10, len(texts["qac"]) - 60]  # carved from the first prefix
    # bytes per token, measured by decoding a sample, is the true ratio of the text (+1 byte per EOD separator)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    true_bpt = sum(len(t.encode()) + 1 for t in texts["qad"][-20:]) / sum(len(tok.encode(t).ids) + 1 for t in texts["qad"][-20:])
    assert m.bytes_per_token("validation")["qad"] == pytest.approx(true_bpt, rel=1e-9)

    # blend it and train one CPU step with per-language validation and bits per byte
    out = run_cli("blend", "--data", tmp_path / "data", "--ratios", "amber=0.5,cobalt=0.5", "--samples", "200", "--seq-length", "32",
                  "--json").stdout
    audit = json.loads(out)
    assert audit["families"]["cobalt"]["realized"] == pytest.approx(0.5, abs=0.02) and audit["languages"]["qac"]["samples"] > 0
    run_cli("train", "--recipe", "cpu_15k", "--data", tmp_path / "data", "--ratios", "amber=0.5,cobalt=0.5", "--out", tmp_path / "run",
            "--max-steps", "1", "--no-progress", "model.seq_length=32")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert set(result["language_bpb"]) == {"qaa", "qab", "qac", "qad"} and all(v > 0 for v in result["language_bpb"].values())
    # the user's files: untouched, and nothing added beside them
    assert checksums(root / "megatron") == before


def test_a_nemo_recipe_uses_the_data_s_own_tokenizer_offline(user_data, tmp_path):
    pytest.importorskip("nemo.collections.llm")
    import fiddle as fdl

    from mlsl_nemo.recipe import pretrain_recipe

    from tokenizers import Tokenizer

    root, texts, _ = user_data
    run_cli("prepare", "--indexed", root / "spec.yaml", "--tokenizer", root / "tokenizer.json", "--out", tmp_path / "data")
    recipe = pretrain_recipe("atlas_s00", str(tmp_path / "data"), "amber=0.5,cobalt=0.5", num_gpus_per_node=1, check_epochs=False,
                             overrides=["train.global_batch_size=32", "train.micro_batch_size=8"])
    tok = fdl.build(recipe.data.tokenizer)  # NeMo's AutoTokenizer on the copied tokenizer directory: no download
    # it encodes as the team's own tokenizer.json did when it wrote their data (build_indexed)
    team = Tokenizer.from_file(str(root / "tokenizer.json"))
    for text in texts["qaa"][:5]:
        assert tok.text_to_ids(text) == team.encode(text).ids
    assert tok.vocab_size == team.get_vocab_size() == 300
    assert recipe.data.paths["train"][1::2][:2] == [p.prefix for p in Manifest.load(tmp_path / "data").parts("qaa", "train")][:1] + \
        [Manifest.load(tmp_path / "data").parts("qab", "train")[0].prefix]


def test_indexed_errors_name_the_language_and_file(user_data, tmp_path):
    from nemo_mlsl.data.from_indexed import IndexedConfig, prepare_indexed

    root, texts, _ = user_data

    def spec(langs) -> str:
        path = tmp_path / f"spec{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump({"languages": langs}))
        return str(path)

    def run(s, tok=root / "tokenizer.json"):
        return prepare_indexed(IndexedConfig(spec=s, tokenizer=str(tok), out=str(tmp_path / "d"), force=True))

    with pytest.raises(DataError, match=r"nope_text_document.idx does not exist \(language 'qaa', train\)"):
        run(spec({"qaa": {"train": str(root / "megatron" / "nope_text_document"), "family": "amber"}}))
    with pytest.raises(ConfigError, match=r"does not know 'qzz'; give its family"):
        run(spec({"qzz": {"train": str(root / "megatron" / "qaa_text_document")}}))
    small = write_tokenizer(tmp_path / "small.json", texts["qab"][:5], vocab_size=260)
    with pytest.raises(DataError, match=r"holds token id \d+, not below the \d+ ids of --tokenizer: the data was made with another"):
        run(spec({"qab": {"train": str(root / "megatron" / "qab_text_document"), "family": "amber"}}), small)
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    empty = IndexedDatasetBuilder(str(tmp_path / "empty.bin"), dtype=np.uint16)
    empty.finalize(str(tmp_path / "empty.idx"))
    with pytest.raises(DataError, match=r"empty \(language 'qaa', train\) holds no documents"):
        run(spec({"qaa": {"train": str(tmp_path / "empty"), "family": "amber"}}))
    assert not (tmp_path / "d").exists()  # nothing half-written


def test_parquet_shards_in_a_directory_per_language(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nemo_mlsl.data.prepare import PrepareConfig, prepare

    for code, word in (("de", "Haus"), ("fr", "maison")):
        d = tmp_path / "raw" / code / "train"
        d.mkdir(parents=True)
        for shard in range(2):
            body = [f"{word} {shard} {i} " * 5 for i in range(15)]
            pq.write_table(pa.table({"content": body, "id": list(range(15))}), d / f"{shard:03d}_00000.parquet")
    with pytest.raises(DataError, match=r"no column 'text' \(columns: content, id\); choose one with --text-field"):
        prepare(PrepareConfig(inputs=[str(tmp_path / "raw")], out=str(tmp_path / "d"), vocab_size=80, val_docs=2, progress=False))
    m = prepare(PrepareConfig(inputs=[str(tmp_path / "raw")], out=str(tmp_path / "d"), vocab_size=80, val_docs=2, progress=False,
                              text_field="content"))
    assert m.languages == ["de", "fr"] and m.family_of("fr") == "romance"
    assert [m.stats("de", s).documents for s in ("train", "validation", "test")] == [26, 2, 2]

import gzip
import json
import os
import unicodedata

import pytest

from conftest import FIXTURES, run_cli
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.data.prepare import PrepareConfig, prepare
from nemo_mlsl.errors import ConfigError, DataError


def test_real_text_manifest(real_data):
    m = Manifest.load(real_data)
    assert set(m.languages) == {"de", "en", "es", "fr", "ja", "ru", "uk", "zh"}
    assert m.families == {"germanic": ["de", "en"], "japonic": ["ja"], "romance": ["es", "fr"],
                          "sino_tibetan": ["zh"], "slavic": ["ru", "uk"]}
    assert m.doc["schema_version"] == 2 and m.tokenizer_path.exists() and m.tokenizer_kind == "sentencepiece"
    raw = (FIXTURES / "realtext" / "ru.txt").read_text(encoding="utf-8")
    docs = [d for d in raw.split("\n\n") if d.strip()]
    splits = [m.stats("ru", s) for s in ("train", "validation", "test")]
    assert [s.documents for s in splits] == [len(docs) - 2, 1, 1]
    # bytes per split add up to the UTF-8 size of the documents (+1 separator each)
    assert sum(s.bytes for s in splits) == sum(len(d.strip("\n").encode()) + 1 for d in docs)
    assert all(s.tokens > s.documents for s in splits)
    # Cyrillic is several UTF-8 bytes per character, so more bytes per token than English
    assert m.bytes_per_token("train")["ru"] > 1.0


def test_decoding_the_indexed_data_gives_back_the_text(real_data):
    import sentencepiece as spm
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    m = Manifest.load(real_data)
    sp = spm.SentencePieceProcessor(model_file=str(m.tokenizer_path))
    ds = IndexedDataset(m.prefix("zh", "train"))
    text = sp.decode(ds[0][:-1].tolist())
    assert ds[0][-1] == m.eod_id
    # the tokenizer applies NFKC (full-width punctuation becomes ASCII); everything else round-trips
    assert text in unicodedata.normalize("NFKC", (FIXTURES / "realtext" / "zh.txt").read_text(encoding="utf-8"))


def test_rerun_is_a_noop_unless_forced(tmp_path):
    cfg = PrepareConfig(inputs=[str(FIXTURES / "realtext")], out=str(tmp_path / "d"), vocab_size=400, val_docs=1, progress=False)
    prepare(cfg)
    idx = tmp_path / "d" / "train" / "en.idx"
    before = idx.stat().st_mtime_ns
    prepare(cfg)
    assert idx.stat().st_mtime_ns == before
    cfg.force = True
    prepare(cfg)
    assert idx.stat().st_mtime_ns != before
    cfg.force, cfg.vocab_size = False, 420
    with pytest.raises(ConfigError, match="--force"):
        prepare(cfg)


def test_same_seed_same_split_and_tokens(tmp_path):
    outs = []
    for name in ("a", "b"):
        prepare(PrepareConfig(inputs=[str(FIXTURES / "realtext")], out=str(tmp_path / name), vocab_size=400, val_docs=1, progress=False))
        outs.append((tmp_path / name / "train" / "fr.bin").read_bytes())
    assert outs[0] == outs[1]


def test_jsonl_gz_txt_and_manifest_inputs(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with gzip.open(raw / "de.jsonl.gz", "wt", encoding="utf-8") as fh:
        for i in range(6):
            fh.write(json.dumps({"text": f"Das ist Satz Nummer {i} über Bäume und Häuser."}) + "\n")
    (tmp_path / "es.txt").write_text("\n\n".join(f"Esta es la frase {i} sobre casas." for i in range(6)), encoding="utf-8")
    (tmp_path / "list.yaml").write_text("languages:\n  es: [es.txt]\n")
    m = prepare(PrepareConfig(inputs=[str(raw), str(tmp_path / "list.yaml")], out=str(tmp_path / "d"), vocab_size=80, val_docs=1, progress=False))
    assert m.languages == ["de", "es"] and m.family_of("es") == "romance"
    assert m.stats("de", "train").documents == 4


def test_error_unknown_language_code(tmp_path):
    (tmp_path / "xq.txt").write_text("a\n\nb\n\nc\n")
    with pytest.raises(ConfigError, match="unknown language code 'xq'"):
        prepare(PrepareConfig(inputs=[str(tmp_path)], out=str(tmp_path / "d"), progress=False))


def test_error_malformed_jsonl_names_the_line(tmp_path):
    (tmp_path / "de.jsonl").write_text('{"text": "gut"}\n{"txt": "x"}\n{"text": "gut"}\n{"text": "gut"}\n')
    with pytest.raises(DataError, match=r"de.jsonl: document 2: expected a JSON object with a 'text' field \(choose the field "
                                        r"with --text-field\)"):
        prepare(PrepareConfig(inputs=[str(tmp_path)], out=str(tmp_path / "d"), progress=False))


def test_error_too_few_documents(tmp_path):
    (tmp_path / "de.txt").write_text("nur ein Dokument\n")
    with pytest.raises(DataError, match="'de' has 1 documents"):
        prepare(PrepareConfig(inputs=[str(tmp_path)], out=str(tmp_path / "d"), progress=False))
    assert not (tmp_path / "d").exists()  # nothing half-written


def test_error_missing_input_and_empty_dir(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        prepare(PrepareConfig(inputs=[str(tmp_path / "nope")], out=str(tmp_path / "d"), progress=False))
    with pytest.raises(ConfigError, match="no <code>.jsonl"):
        prepare(PrepareConfig(inputs=[str(tmp_path)], out=str(tmp_path / "d"), progress=False))


def test_missing_bin_or_idx_is_reported(real_data, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(real_data, copy)
    os.remove(copy / "validation" / "uk.bin")
    with pytest.raises(DataError) as err:
        Manifest.load(copy)
    assert "uk.bin" in str(err.value) and "'validation'" in str(err.value) and "mlsl prepare --force" in str(err.value)
    with pytest.raises(DataError, match="prepare the data first"):
        Manifest.load(tmp_path / "nothing")


def test_cli_prepare_prints_families(tmp_path):
    proc = run_cli("prepare", "--input", FIXTURES / "realtext", "--out", tmp_path / "d", "--vocab-size", "400", "--val-docs", "1", "--workers", "2")
    assert "8 languages, 5 families" in proc.stdout and "slavic" in proc.stdout
    bad = run_cli("prepare", "--input", tmp_path / "none", "--out", tmp_path / "e", check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_vocabulary_smaller_than_the_alphabet_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--vocab-size 100 is smaller than the \d+ distinct characters"):
        prepare(PrepareConfig(inputs=[str(FIXTURES / "realtext")], out=str(tmp_path / "d"), vocab_size=100, val_docs=1, progress=False))


def test_a_vocabulary_smaller_than_the_alphabet_spells_rare_characters_as_bytes(tmp_path):
    """The shipped real text (8 languages, Chinese and Japanese among them) has more distinct characters than
    this vocabulary has pieces: byte fallback spells the rare ones as bytes, and decoding gives the text back."""
    from nemo_mlsl.data.tokenizer import SentencePieceTokenizer
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    texts = {p.stem: p.read_text(encoding="utf-8") for p in (FIXTURES / "realtext").glob("*.txt")}
    distinct = len(set("".join(texts.values())) - {"\n"})
    m = prepare(PrepareConfig(inputs=[str(FIXTURES / "realtext")], out=str(tmp_path / "d"), vocab_size=320, val_docs=1, progress=False))
    assert m.vocab_size <= 320 < distinct
    tok = SentencePieceTokenizer(m.tokenizer_path)
    pieces = [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]
    assert sum(p.startswith("<0x") for p in pieces) == 256
    for lang in ("zh", "ja", "ru"):
        for split in ("train", "validation", "test"):
            ds = IndexedDataset(m.prefix(lang, split))
            for i in range(len(ds)):
                text = tok.decode(ds[i][:-1].tolist())
                assert text and text in unicodedata.normalize("NFKC", texts[lang]), (lang, split, text[:40])
    zh = IndexedDataset(m.prefix("zh", "train"))
    assert any(p.startswith("<0x") for p in (tok.sp.id_to_piece(int(t)) for t in zh[0]))  # a rare character, as bytes


# --- Unicode line and paragraph separators: planning and workers see the same documents ----------------------

def _byte_level_tokenizer(path, texts):
    """A Hugging Face byte-level BPE tokenizer: decoding gives back exactly the text that was encoded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<pad>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


def _expected_splits(texts, code, val_docs, seed=1234):
    """Document i's split, from the seeded validation and test indices."""
    from nemo_mlsl.data.splits import split_indices

    val, test = (set(x.tolist()) for x in split_indices(len(texts), code, seed, val_docs))
    out = {"train": [], "validation": [], "test": []}
    for i, t in enumerate(texts):
        out["validation" if i in val else "test" if i in test else "train"].append(t)
    return out


def _decoded_splits(m, code, tokenizer_json):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    out = {}
    for split in ("train", "validation", "test"):
        ds = IndexedDataset(m.prefix(code, split))
        assert all(ds[i][-1] == tok.token_to_id("</s>") for i in range(len(ds)))
        out[split] = [tok.decode(ds[i][:-1].tolist(), skip_special_tokens=False) for i in range(len(ds))]
    return out


def _small_chunks(monkeypatch, size=3):
    """Plan chunks of a few documents, so chunk boundaries fall next to the separators under test."""
    import functools

    from nemo_mlsl.data import documents, prepare as prepare_module

    monkeypatch.setattr(prepare_module, "chunk_plan", functools.partial(documents.chunk_plan, chunk_docs=size))


@pytest.mark.parametrize("workers", [1, 2])
def test_json_strings_with_unicode_line_breaks_are_whole_documents(tmp_path, monkeypatch, workers):
    """U+2028, U+2029 and U+0085 are valid raw inside JSON strings (json.dumps(..., ensure_ascii=False) writes them);
    lines holding only Unicode whitespace between records are skipped alike by the planner and the workers."""
    _small_chunks(monkeypatch)
    breaks = ["\u2028", "\u2029", "\u0085", "\u2028\u2029", "\u3000\u2028"]
    texts = [f"Satz {i} über Bäume{breaks[i % 5]}zweite Zeile {i}{breaks[(i + 1) % 5]}Ende" for i in range(17)]
    lines = [json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts]
    lines[4] += "\u3000\n"      # separator-like lines between records: not records
    lines[8] += "\u2028\n\n"
    lines[11] += " \u0085 \n"
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "de.jsonl").write_text("".join(lines), encoding="utf-8")
    with gzip.open(raw / "fr.jsonl.gz", "wt", encoding="utf-8") as fh:  # read centrally, not planned
        fh.write("".join(lines))
    assert "\u2028" in (raw / "de.jsonl").read_text(encoding="utf-8")  # raw, not escaped
    tok = _byte_level_tokenizer(tmp_path / "tokenizer.json", texts)
    m = prepare(PrepareConfig(inputs=[str(raw)], out=str(tmp_path / "d"), tokenizer=str(tok), val_docs=2, workers=workers,
                              progress=False))
    for code in ("de", "fr"):
        assert sum(m.stats(code, s).documents for s in ("train", "validation", "test")) == 17
        assert _decoded_splits(m, code, tok) == _expected_splits(texts, code, 2)


@pytest.mark.parametrize("workers", [1, 2])
def test_txt_documents_are_separated_by_whitespace_only_lines_whatever_the_whitespace(tmp_path, monkeypatch, workers):
    """A line of U+3000 (ideographic space) alone separates documents like an empty line; inside a document,
    U+3000 indentation, U+2028/U+2029/U+0085 and a lone CR stay as they are, and CRLF ends a line like LF."""
    _small_chunks(monkeypatch)
    texts = [f"\u3000第{i}段落です。\n二行目\u2028同じ行\u0085{i}\u2029終わり" if i % 2 else f"Line {i}\rsame line\nsecond line {i}"
             for i in range(19)]
    separators = ["\n\u3000\n", "\n\u3000\u3000\n", "\n\n", "\n \u3000\t\n\u3000\n", "\n\u2028\n", "\r\n\u3000\r\n", "\n\u00a0\n"]
    body = "\u3000\n"  # the file may start with a separator too
    for i, t in enumerate(texts):
        body += (t.replace("\n", "\r\n") if i % 7 == 5 else t) + separators[i % len(separators)]
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ja.txt").write_bytes(body.encode("utf-8"))
    with gzip.open(raw / "zh.txt.gz", "wb") as fh:
        fh.write(body.encode("utf-8"))
    tok = _byte_level_tokenizer(tmp_path / "tokenizer.json", texts)
    m = prepare(PrepareConfig(inputs=[str(raw)], out=str(tmp_path / "d"), tokenizer=str(tok), val_docs=3, workers=workers,
                              progress=False))
    for code in ("ja", "zh"):
        assert sum(m.stats(code, s).documents for s in ("train", "validation", "test")) == 19
        assert _decoded_splits(m, code, tok) == _expected_splits(texts, code, 3)
        assert sum(m.stats(code, s).bytes for s in ("train", "validation", "test")) == sum(len(t.encode()) + 1 for t in texts)

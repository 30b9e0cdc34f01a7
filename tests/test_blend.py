import json

import numpy as np
import pytest
import sentencepiece as spm

from conftest import run_cli
from nemo_mlsl.data.blend import BlendConfig, FamilyBlend
from nemo_mlsl.data.manifest import Manifest
from nemo_mlsl.errors import ConfigError

RATIOS = {"germanic": 0.3, "romance": 0.25, "slavic": 0.2, "sino_tibetan": 0.15, "japonic": 0.1}


def test_realized_family_shares_match_targets_at_20k_samples(real_data):
    proc = run_cli("blend", "--data", real_data, "--ratios", ",".join(f"{k}={v}" for k, v in RATIOS.items()),
                   "--within", "temperature:2", "--samples", "20000", "--seq-length", "32", "--max-epochs", "1000000", "--json")
    audit = json.loads(proc.stdout)
    assert set(audit) == {"families", "languages"}
    for fam, target in RATIOS.items():
        f = audit["families"][fam]
        assert f["target"] == pytest.approx(target)
        assert abs(f["realized"] - target) < 0.002
        assert f["epochs"] > 0
    # within a family, temperature:2 splits by sqrt(tokens)
    m = Manifest.load(real_data)
    tok = m.tokens("train")
    de, en = audit["languages"]["de"]["target"], audit["languages"]["en"]["target"]
    assert de / en == pytest.approx(np.sqrt(tok["de"] / tok["en"]))


def test_dataset_id_maps_samples_to_their_language(real_data):
    m = Manifest.load(real_data)
    built = FamilyBlend(m, BlendConfig(RATIOS, seq_length=16, max_epochs=1e6)).build(2000, 5)
    sp = spm.SentencePieceProcessor(model_file=str(m.tokenizer_path))
    scripts = {"ru": "Cyrillic", "uk": "Cyrillic", "zh": "CJK", "ja": "CJK", "en": "Latin", "de": "Latin", "es": "Latin", "fr": "Latin"}

    def script(text):
        for ch in text:
            if "\u0400" <= ch <= "\u04ff":
                return "Cyrillic"
            if "\u3040" <= ch <= "\u9fff":
                return "CJK"
            if ch.isalpha():
                return "Latin"

    counts = np.zeros(len(built.validation_languages), int)
    for i in range(len(built.validation)):
        s = built.validation[i]
        lang = built.validation_languages[int(s["dataset_id"])]
        counts[int(s["dataset_id"])] += 1
        assert script(sp.decode(s["tokens"].tolist())) == scripts[lang]
    assert (counts == 5).all()  # the same number of validation samples for every language
    for i in range(0, 2000, 97):
        s = built.train[i]
        assert script(sp.decode(s["tokens"].tolist())) == scripts[built.train_languages[int(s["dataset_id"])]]


def test_same_seed_same_order_other_seed_other_order(synth_data):
    m = Manifest.load(synth_data)
    ratios = {"amber": 0.5, "cobalt": 0.25, "jade": 0.25}
    order = lambda seed: [FamilyBlend(m, BlendConfig(ratios, seq_length=32, seed=seed)).build(500, 2).train[i]["tokens"][:4].tolist() for i in range(20)]
    assert order(1) == order(1)
    assert order(1) != order(2)


def test_zero_ratio_family_is_left_out_of_training_but_validated(synth_data):
    m = Manifest.load(synth_data)
    built = FamilyBlend(m, BlendConfig({"amber": 0.5, "cobalt": 0.5}, seq_length=32)).build(200, 2)
    assert all(m.family_of(l) != "jade" for l in built.train_languages)
    assert any(m.family_of(l) == "jade" for l in built.validation_languages)
    assert built.audit()["families"]["jade"]["realized"] == 0


def test_epoch_cap_is_checked_before_building(synth_data):
    m = Manifest.load(synth_data)
    with pytest.raises(ConfigError, match=r"family '\w+' would repeat its data [\d.]+ times.*cap of 2 epochs"):
        FamilyBlend(m, BlendConfig({"amber": 0.1, "cobalt": 0.8, "jade": 0.1}, seq_length=128, max_epochs=2)).build(10_000, 2)


def test_epoch_cap_is_checked_for_every_language(tmp_path):
    """A family with one big and one tiny language, sampled ``within: uniform``: the family as a whole is far
    below the cap, its tiny language far above it."""
    from nemo_mlsl.data.prepare import PrepareConfig, prepare
    from nemo_mlsl.data.synth import SynthConfig, generate

    generate(SynthConfig(families=2, languages_per_family=2, docs=200, seed=1), tmp_path / "raw")
    tiny = tmp_path / "raw" / "qaa.jsonl"
    tiny.write_text("".join(tiny.read_text().splitlines(True)[:12]))
    m = prepare(PrepareConfig(inputs=[str(tmp_path / "raw")], out=str(tmp_path / "data"), families_yaml=str(tmp_path / "raw" / "families.yaml"),
                              vocab_size=256, val_docs=1, progress=False))
    ratios = {"amber": 0.5, "cobalt": 0.5}
    tok = m.tokens()
    samples = int(1.5 * m.family_tokens()["amber"] / 0.5 / 32)  # amber as a whole: 1.5 epochs
    assert FamilyBlend(m, BlendConfig(ratios, seq_length=32, max_epochs=4)).check_epochs(samples)["amber"] < 4
    with pytest.raises(ConfigError, match=r"language 'qaa' would repeat its data [\d.]+ times: language ratio 0.25 .* cap of 4 "
                                          r"epochs.*within: uniform"):
        FamilyBlend(m, BlendConfig(ratios, within="uniform", seq_length=32, max_epochs=4)).build(samples, 1)
    assert 0.25 * samples * 32 / tok["qaa"] > 4


def test_cli_errors(synth_data):
    bad = run_cli("blend", "--data", synth_data, "--ratios", "amber=0.5,cobalt=0.4", "--samples", "10", check=False)
    assert bad.returncode == 2 and "sum to 0.9" in bad.stderr and "--normalize" in bad.stderr
    bad = run_cli("blend", "--data", synth_data, "--ratios", "amber=0.5,klingon=0.5", "--samples", "10", check=False)
    assert "unknown family 'klingon'" in bad.stderr
    ok = run_cli("blend", "--data", synth_data, "--ratios", "amber=0.5,cobalt=0.4", "--normalize", "--samples", "100", "--seq-length", "16")
    assert "amber" in ok.stdout and "realized" in ok.stdout


def test_the_audit_counts_exactly_the_requested_samples(synth_data):
    """megatron builds its blend a little larger than asked; the audit reports the samples a run draws, the first
    ``samples`` ones, with realized shares counted from their own dataset ids."""
    m = Manifest.load(synth_data)
    blend = FamilyBlend(m, BlendConfig({"amber": 0.5, "cobalt": 0.3, "jade": 0.2}, seq_length=16))
    for samples in (10, 37):
        built = blend.build(samples, 1)
        assert len(built.train) > samples  # the surplus that must not be counted
        drawn = [built.train_languages[int(built.train[i]["dataset_id"])] for i in range(samples)]
        audit = built.audit()
        assert audit["samples"] == samples
        for lang, entry in audit["languages"].items():
            assert entry["samples"] == drawn.count(lang) and entry["realized"] == pytest.approx(drawn.count(lang) / samples)
            assert entry["tokens"] == drawn.count(lang) * 16
        for fam, entry in audit["families"].items():
            n = sum(drawn.count(lang) for lang in m.family_languages()[fam])
            assert entry["samples"] == n and entry["realized"] == pytest.approx(n / samples)
    proc = run_cli("blend", "--data", synth_data, "--ratios", "amber=0.5,cobalt=0.3,jade=0.2", "--samples", "10", "--seq-length", "16")
    assert proc.stdout.startswith("10 samples x 16 tokens")

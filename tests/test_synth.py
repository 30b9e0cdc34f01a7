import json

import pytest
import yaml

from nemo_mlsl.data.synth import SynthConfig, generate
from nemo_mlsl.errors import ConfigError


def _chars(path):
    return {ch for line in path.read_text(encoding="utf-8").splitlines() for ch in json.loads(line)["text"]} - {" ", "."}


def test_same_seed_same_corpus(tmp_path):
    cfg = SynthConfig(families=2, languages_per_family=2, docs=20, seed=7)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    for f in (tmp_path / "a").glob("*.jsonl"):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()
    generate(SynthConfig(families=2, languages_per_family=2, docs=20, seed=8), tmp_path / "c")
    assert (tmp_path / "a" / "qaa.jsonl").read_bytes() != (tmp_path / "c" / "qaa.jsonl").read_bytes()


def test_families_share_no_characters_without_transfer(tmp_path):
    fams = generate(SynthConfig(families=3, languages_per_family=2, docs=20, transfer=0.0), tmp_path)
    assert yaml.safe_load((tmp_path / "families.yaml").read_text())["families"] == fams
    chars = {f: set().union(*(_chars(tmp_path / f"{c}.jsonl") for c in codes)) for f, codes in fams.items()}
    names = list(chars)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert not chars[names[i]] & chars[names[j]]
    # languages of one family share most of their characters (same script, a few sound changes)
    a, b = fams[names[0]]
    ca, cb = _chars(tmp_path / f"{a}.jsonl"), _chars(tmp_path / f"{b}.jsonl")
    assert len(ca & cb) / len(ca | cb) > 0.7


def test_transfer_borrows_from_the_partner_family_only(tmp_path):
    fams = generate(SynthConfig(families=3, languages_per_family=1, docs=30, transfer=0.4), tmp_path)
    (a,), (b,), (c,) = fams.values()
    own = {}
    generate(SynthConfig(families=3, languages_per_family=1, docs=30, transfer=0.0), tmp_path / "plain")
    for code in (a, b, c):
        own[code] = _chars(tmp_path / "plain" / f"{code}.jsonl")
    # a and b are partners: each now holds the other's characters; c (odd one out) borrows nothing
    chars_a, chars_b, chars_c = (_chars(tmp_path / f"{x}.jsonl") for x in (a, b, c))
    assert own[a] & chars_b and own[b] & chars_a and not (own[c] & chars_b)
    assert chars_c == own[c]


@pytest.mark.parametrize("kw,match", [({"families": 0}, "--families"), ({"docs": 3}, "--docs"), ({"transfer": 1.5}, "--transfer")])
def test_bad_config(tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        generate(SynthConfig(**kw), tmp_path)


def test_size_spread_plants_family_sizes(tmp_path):
    """size_spread s: family f has docs · 2^(-s·(f/(F-1) - 1/2)) documents (times each language's factor in 0.5–1.5)."""
    def docs(cfg, out):
        fams = generate(cfg, out)
        return {f: sum(len((out / f"{c}.jsonl").read_text().splitlines()) for c in codes) for f, codes in fams.items()}

    even = docs(SynthConfig(families=3, languages_per_family=2, docs=160, seed=1), tmp_path / "even")
    skew = docs(SynthConfig(families=3, languages_per_family=2, docs=160, seed=1, size_spread=4.0), tmp_path / "skew")
    for f, scale in zip(["amber", "cobalt", "jade"], [4.0, 1.0, 0.25]):
        assert skew[f] == pytest.approx(even[f] * scale, rel=0.1), (f, skew[f], even[f])
    with pytest.raises(ConfigError, match="size_spread"):
        generate(SynthConfig(size_spread=9.0), tmp_path / "bad")


def test_synth_cli_takes_the_spreads(tmp_path):
    from conftest import run_cli

    run_cli("synth", "--out", tmp_path / "c", "--families", "2", "--languages-per-family", "1", "--docs", "40",
            "--size-spread", "2", "--richness-spread", "0")
    meta = json.loads((tmp_path / "c" / "synth.json").read_text())["config"]
    assert meta["size_spread"] == 2.0 and meta["richness_spread"] == 0.0
    lines = [len((tmp_path / "c" / f"{c}.jsonl").read_text().splitlines()) for c in ("qaa", "qab")]
    assert lines[0] > 2 * lines[1]

import json
import multiprocessing as mp

import pytest

from nemo_mlsl.errors import ConfigError, DataError
from nemo_mlsl.results import ResultsStore


def rec(i, **kw):
    return {"run_id": f"r{i}", "N": 1e6, "D": 1e8, "ratios": {"a": 0.5, "b": 0.5}, "family_loss": {"a": 3.0, "b": 3.5}, **kw}


def test_append_and_read_keep_extra_keys(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    store.append(rec(1, recipe="cpu_100k", family_bpb={"a": 1.0}))
    store.append(rec(2))
    out = store.read()
    assert [r["run_id"] for r in out] == ["r1", "r2"] and out[0]["recipe"] == "cpu_100k" and out[0]["family_bpb"] == {"a": 1.0}
    assert ResultsStore(tmp_path).read() == out  # a study directory resolves to its results.jsonl


def test_duplicates_are_refused_and_dedupe_keeps_the_first(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    store.append(rec(1))
    with pytest.raises(ConfigError, match="already in"):
        store.append(rec(1))
    assert store.append(rec(1), skip_existing=True) is False
    with open(store.path, "a") as fh:
        fh.write(json.dumps(rec(1, family_loss={"a": 9.0, "b": 9.0})) + "\n")
    with pytest.raises(DataError, match="'r1' appears more than once; pass --dedupe"):
        store.read()
    assert store.read(dedupe=True)[0]["family_loss"]["a"] == 3.0


def test_malformed_line_is_reported_with_its_number(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    store.append(rec(1))
    with open(store.path, "a") as fh:
        fh.write('{"run_id": "r2", "N": \n')
    with pytest.raises(DataError, match=r"results.jsonl:2: malformed JSON"):
        store.read()


@pytest.mark.parametrize("bad,match", [
    ({"N": -1}, "N must be a positive number"),
    ({"ratios": {"a": 0.7, "b": 0.7}}, "ratios sum to 1.4"),
    ({"family_loss": {"a": 0.0, "b": 1.0}}, "not a positive finite loss"),
    ({"run_id": ""}, "run_id must be a non-empty string"),
])
def test_invalid_records(tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        ResultsStore(tmp_path / "s.jsonl").append(rec(1, **bad))
    with pytest.raises(ConfigError, match="missing key"):
        ResultsStore(tmp_path / "s.jsonl").append({"run_id": "x"})


def _writer(path, start, n):
    store = ResultsStore(path)
    for i in range(start, start + n):
        store.append(rec(i, payload="x" * 5000))


def test_concurrent_writers_lose_and_corrupt_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, k * 100, 25)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    out = ResultsStore(path).read()
    assert sorted(r["run_id"] for r in out) == sorted(f"r{k * 100 + i}" for k in range(4) for i in range(25))

import json
import multiprocessing as mp
import os

import pytest

from nemo_mlsl.errors import ConfigError, DataError
from nemo_mlsl.results import ResultsStore, StoreWarning


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


# -- a store cut at its end, torn by a crash, edited by hand ---------------------------------------------------------

def _lines(path):
    return path.read_bytes().split(b"\n")


def test_appending_to_a_store_whose_last_line_lacks_its_newline_keeps_every_record(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    for i in range(3):
        store.append(rec(i))
    store.path.write_bytes(store.path.read_bytes()[:-1])  # `head -c -1 results.jsonl > mine.jsonl`: still reads fine
    assert [r["run_id"] for r in store.read()] == ["r0", "r1", "r2"]
    store.append(rec(3))
    store.append(rec(4))
    assert [r["run_id"] for r in store.read()] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(json.loads(line) for line in _lines(store.path)[:-1]) and store.path.read_bytes().endswith(b"}\n")
    with pytest.raises(ConfigError, match="'r2' is already in"):  # the record that lacked its newline is indexed
        store.append(rec(2))


def test_the_same_store_cut_at_its_end_imports_through_the_cli(tmp_path, capsys):
    from nemo_mlsl.cli import main

    shares, losses = tmp_path / "shares.csv", tmp_path / "losses.csv"
    shares.write_text("index,a,b\nx1,0.5,0.5\nx2,0.2,0.8\n")
    losses.write_text("index,a,b\nx1,3.1,3.2\nx2,3.3,3.0\n")
    store = ResultsStore(tmp_path / "mine.jsonl")
    store.append(rec(1))
    store.path.write_bytes(store.path.read_bytes().rstrip(b"\n"))
    assert main(["import-runs", "csv", "--shares", str(shares), "--losses", str(losses), "--N", "1e6", "--D", "1e8",
                 "--out", str(store.path)]) == 0
    assert "imported 2 of 2 runs" in capsys.readouterr().out
    assert [r["run_id"] for r in store.read()] == ["r1", "x1", "x2"]


def test_a_torn_last_line_is_set_aside_with_a_warning_and_the_store_carries_on(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    for i in range(3):
        store.append(rec(i))
    torn = json.dumps(rec(3))[:40].encode()
    with open(store.path, "ab") as fh:
        fh.write(torn)  # what a crash in the middle of a write leaves
    with pytest.warns(StoreWarning) as caught:
        assert [r["run_id"] for r in store.read()] == ["r0", "r1", "r2"]
    message = str(caught[0].message)
    assert str(store.path) in message and str(store.torn_path) in message and "cut short" in message
    assert store.torn_path.read_bytes() == torn + b"\n"  # kept, never silently dropped
    assert store.path.read_bytes().endswith(b"}\n")
    store.append(rec(3))  # the run that was interrupted records normally
    assert [r["run_id"] for r in store.read()] == ["r0", "r1", "r2", "r3"]
    with open(store.path, "ab") as fh:  # a second crash: its tail is kept too, after the first
        fh.write(b'{"run_id": "r9", "N": 1')
    with pytest.warns(StoreWarning):
        store.append(rec(4))
    assert _lines(store.torn_path) == [torn, b'{"run_id": "r9", "N": 1', b""]
    assert [r["run_id"] for r in store.read()] == ["r0", "r1", "r2", "r3", "r4"]


def test_a_torn_store_fits_through_the_cli_with_one_warning_line(tmp_path):
    from conftest import run_cli
    from test_fitting import planted

    recs, _, _ = planted(families=2, Ns=(1e6, 1e7), Ds=(1e8, 1e9), per=2)
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + json.dumps(recs[0])[:30])
    proc = run_cli("fit", "--runs", path, "--law", "joint_family", "--out", tmp_path / "fit", "--bootstrap", "0")
    assert f"fitted joint_family to {len(recs)} runs" in proc.stdout
    warning = [l for l in proc.stderr.splitlines() if "warning" in l]
    assert warning == [f"mlsl fit: warning: {path}: its last line was cut short (30 bytes without a newline, as a crash "
                       f"mid-write leaves it); it was moved to {path}.torn and the store's complete records are kept"], proc.stderr


def test_a_malformed_line_in_the_middle_stays_an_error_whatever_the_index_knows(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    for i in range(4):
        store.append(rec(i))
    lines = _lines(store.path)
    lines[1] = lines[1][:20]  # torn in the middle: not what a crash at the end leaves, so not set aside
    store.path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"results.jsonl:2: malformed JSON"):
        store.read()
    with pytest.raises(DataError, match=r"results.jsonl:2: malformed JSON"):
        store.append(rec(9))
    assert not store.torn_path.exists()


# -- the index: an append does not read the store ----------------------------------------------------------------

def _count_parses(monkeypatch):
    calls = []
    original = ResultsStore._parse

    def counting(self, raw, lineno, offset):
        calls.append(lineno)
        return original(self, raw, lineno, offset)

    monkeypatch.setattr(ResultsStore, "_parse", counting)
    return calls


def _bulk(path, n, start=0):
    with open(path, "a") as fh:
        fh.write("".join(json.dumps(rec(i)) + "\n" for i in range(start, start + n)))


def test_an_append_reads_only_what_was_appended_since_the_index_last_looked(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "results.jsonl")
    _bulk(store.path, 3000)  # written by another tool: the first look indexes it
    store.append(rec(3000))
    parses = _count_parses(monkeypatch)
    store.append(rec(3001))
    with pytest.raises(ConfigError, match="'r17' is already in"):
        store.append(rec(17))
    assert parses == []  # nothing re-read
    _bulk(store.path, 2, start=5000)  # another writer that does not keep the index
    with pytest.raises(ConfigError, match="'r5001' is already in"):
        store.append(rec(5001))
    assert parses == [3003, 3004]  # only its two lines, with their line numbers
    assert len(store.read()) == 3004


@pytest.mark.parametrize("edit", ["truncated", "rewritten", "rewritten and longer", "replaced", "index deleted", "index corrupt"])
def test_an_index_that_no_longer_describes_the_store_is_rebuilt(tmp_path, edit):
    store = ResultsStore(tmp_path / "results.jsonl")
    for i in range(6):
        store.append(rec(i))
    data = store.path.read_bytes()
    if edit == "truncated":  # the last three runs removed by hand
        store.path.write_bytes(b"".join(l + b"\n" for l in data.split(b"\n")[:3]))
        keep = ["r0", "r1", "r2"]
    elif edit == "rewritten":  # in place, same inode, same size, a while after the last append: one run id changed
        with open(store.path, "r+b") as fh:
            fh.write(data.replace(b'"r3"', b'"q3"'))
        later = store.path.stat().st_mtime_ns + 2_000_000_000
        os.utime(store.path, ns=(later, later))
        keep = ["r0", "r1", "r2", "q3", "r4", "r5"]
    elif edit == "rewritten and longer":  # in place, a line inserted: the bytes where the index ended moved
        with open(store.path, "r+b") as fh:
            fh.write(data.replace(b'"r2"', b'"q2"').replace(b"\n", b"\n" + (json.dumps(rec(7)) + "\n").encode(), 1))
        keep = ["r0", "r7", "r1", "q2", "r3", "r4", "r5"]
    elif edit == "replaced":  # an editor's save: a new file renamed over the store
        new = tmp_path / "new.jsonl"
        new.write_bytes(b"".join(l + b"\n" for l in data.split(b"\n")[2:-1]))
        new.replace(store.path)
        keep = ["r2", "r3", "r4", "r5"]
    elif edit == "index deleted":
        store.index_path.unlink()
        keep = [f"r{i}" for i in range(6)]
    else:
        store.index_path.write_bytes(b"not a database" * 100)
        keep = [f"r{i}" for i in range(6)]
    assert sorted(store.run_ids()) == sorted(keep)
    for rid in keep:  # what the store holds is refused ...
        with pytest.raises(ConfigError, match="already in"):
            store.append({**rec(0), "run_id": rid})
    gone = sorted({f"r{i}" for i in range(8)} - set(keep))
    for rid in gone:  # ... and what it no longer holds can be recorded again
        assert store.append({**rec(0), "run_id": rid})
    assert sorted(r["run_id"] for r in store.read()) == sorted(keep + gone)


def test_an_index_written_before_this_host_last_booted_is_rebuilt(tmp_path, monkeypatch):
    """Its writes are not synced: a crash of the operating system may have lost some, the store's (synced) were not."""
    import nemo_mlsl.results as results

    store = ResultsStore(tmp_path / "results.jsonl")
    for i in range(3):
        store.append(rec(i))
    with open(store.path, "ab") as fh:  # recorded while the index write was lost in the crash
        fh.write((json.dumps(rec(1, family_loss={"a": 9.0, "b": 9.0})) + "\n").encode())
    host = results.BOOT.rpartition(":")[0]
    monkeypatch.setattr(results, "BOOT", f"{host}:another-boot")
    parses = _count_parses(monkeypatch)
    with pytest.raises(DataError, match="'r1' appears more than once"):
        store.read()
    assert parses[:4] == [1, 2, 3, 4]  # read from the start


def test_duplicates_found_by_the_index_and_dedupe_keeps_the_first_in_order(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    for i in range(4):
        store.append(rec(i))
    _bulk(store.path, 1, start=2)
    with open(store.path, "a") as fh:
        fh.write(json.dumps(rec(1, family_loss={"a": 9.0, "b": 9.0})) + "\n")
    with pytest.raises(DataError, match="'r1' appears more than once"):  # the earliest duplicated run is named
        store.read()
    out = store.read(dedupe=True)
    assert [r["run_id"] for r in out] == ["r0", "r1", "r2", "r3"] and out[1]["family_loss"]["a"] == 3.0


def test_a_store_without_a_usable_index_works_by_scanning(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "results.jsonl")
    monkeypatch.setattr(ResultsStore, "index_path", property(lambda self: tmp_path))  # a directory: SQLite cannot open it
    for i in range(3):
        store.append(rec(i))
    with pytest.raises(ConfigError, match="already in"):
        store.append(rec(1))
    store.path.write_bytes(store.path.read_bytes() + b'{"run_id": "r3", "N"')
    with pytest.warns(StoreWarning):
        assert [r["run_id"] for r in store.read()] == ["r0", "r1", "r2"]
    _bulk(store.path, 1, start=1)
    with pytest.raises(DataError, match="'r1' appears more than once"):
        store.read()


def test_reading_streams_in_bounded_memory(tmp_path):
    """The peak of Python memory while iterating does not grow with the store (a list of records would)."""
    import tracemalloc

    def peak(n):
        path = tmp_path / f"s{n}.jsonl"
        _bulk(path, n)
        store = ResultsStore(path)
        store.run_ids()  # index it first: that is the append path's work, not the read's
        tracemalloc.start()
        count = sum(1 for _ in store.iter_records())
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == n
        return top

    small, large = peak(2_000), peak(40_000)
    assert large < 2 * small, (small, large)  # 20x the records; a list would take 20x the memory


def test_a_store_object_holds_only_its_path(tmp_path):
    import copy
    import pickle

    store = ResultsStore(tmp_path / "results.jsonl")
    store.append(rec(1))
    for clone in (copy.deepcopy(store), pickle.loads(pickle.dumps(store))):
        assert clone.read() == store.read()


def _many(path, start, n):
    ResultsStore.fsync = False  # locking and indexing are what is tested; the processes of a host share its page cache
    store = ResultsStore(path)
    for i in range(start, start + n):
        store.append(rec(i))
    store.append(rec(start), skip_existing=True)  # its own first record again: refused, not duplicated


@pytest.mark.slow  # 20,000 locked appends: 43 s on 2 shared cores (measured under load)
def test_two_processes_appending_ten_thousand_records_each_lose_and_duplicate_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_many, args=(path, k * 10_000, 10_000)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    ids = [r["run_id"] for r in ResultsStore(path).read()]
    assert len(ids) == 20_000 and set(ids) == {f"r{i}" for i in range(20_000)}
    ResultsStore(path).index_path.unlink()  # the index agrees with a scan from scratch
    assert ResultsStore(path).run_ids() == set(ids)

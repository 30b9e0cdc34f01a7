"""On RegMix's public runs, the faster fitter chooses the law and writes the held-out table the fitter wrote before
the speed-ups (tests/fixtures/regmix_selection.json, written at commit a9edef9 by

    git worktree add --detach /tmp/ref_main a9edef9
    PYTHONPATH=/tmp/ref_main .venv/bin/python tests/fixtures/make_regmix_selection.py /work/shared/data/regmix \
        tests/fixtures/regmix_selection.json

), within 1e-6 relative, with two worker processes. One fixture per CPU kind the project's machines have
(regmix_selection.json: AVX-512; regmix_selection_avx2.json: AVX2 without AVX-512; regmix_selection_avx512_cooperlake.json:
AVX-512 where OpenBLAS chose its Cooperlake kernel); write another under a new name for a new kind
(tests/fixtures/machine.py says which one holds here).

The chosen law (shukor_additive) stops at L-BFGS-B's 500-iteration cap on these runs, where its iterates are chaotic:
one input moved by an ulp moves its held-out MAPE by ~1e-3 (so do ye_mixing's and some of loglinear's starts).
Agreement to 1e-6 therefore needs the same arithmetic bit for bit, which holds on a CPU with the numpy features and the
OpenBLAS kernels of the one that wrote the fixture (it records them; the first two fixtures predate the kernels'
record and match on features alone); on another, numpy's exp and log or BLAS's products may round differently, and the test says
so and asks for the fixture to be rewritten there with the command above rather than pass on a looser tolerance.
"""

import json
import os
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REGMIX = Path(os.environ.get("MLSL_REGMIX", Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"))


def numbers(a, b, path=""):
    """(path, a, b) for every number of two JSON documents of the same shape (strings must be equal)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            yield from numbers(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            yield from numbers(x, y, f"{path}[{i}]")
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        yield path, float(a), float(b)
    elif path.endswith("/skipped"):
        # whether a law was skipped is the fitter's behaviour; the wording of its reason belongs to the laws' own
        # tests (it has changed since the fixture was written: "target" for "family")
        assert (a is None) == (b is None), path
    else:
        assert a == b, path


@pytest.mark.slow
@pytest.mark.skipif(not (REGMIX / "train_mixture_1m.csv").is_file(), reason="the public RegMix runs are not on this machine")
def test_regmix_selection_chooses_the_same_law_with_the_same_heldout_table_as_before_the_speed_up():
    sys.path.insert(0, str(FIXTURES))
    from machine import fixture_for, this_machine
    from make_regmix_selection import regmix_train

    from nemo_mlsl.fitting.observations import Observations
    from nemo_mlsl.fitting.selection import select_law

    written = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("regmix_selection*.json"))]
    before = fixture_for(written)
    if before is None:
        pytest.skip(f"the fixtures' bits belong to CPUs with numpy features and BLAS kernels "
                    f"{[{k: d.get(k) for k in ('cpu_features', 'blas')} for d in written]}; this one has {this_machine()}: "
                    "write a fixture for it with the command in this module's docstring")
    obs = Observations.from_records(regmix_train(REGMIX))
    laws = [law["law"] for law in before["selection"]["laws"]]  # a law registered since has no row to compare
    now = select_law(obs, laws, folds=5, seed=0, jobs=2).to_dict()
    assert now["chosen"] == before["selection"]["chosen"] == "shukor_additive"
    for law in now["laws"]:
        law.pop("fit_s")
    for path, a, b in numbers(before["selection"], now):
        assert b == pytest.approx(a, rel=1e-6, abs=0 if a else 1e-12), path

"""Bounded, seeded fuzz run of the readers (issue 8): mutated SMAP granules, ISMN downloads and
GeoTIFF predictors, each in a child process with a timeout, two in parallel (~2 minutes).

Every case must end in success or one clean SmdError that leaves nothing behind: never a
signal, a hang, another exception or a traceback. The longer run is ``scripts/fuzz-inputs``.
"""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fuzzing  # noqa: E402

SEED = int(os.environ.get("SMDOWNSCALE_FUZZ_SEED", "20261201"))
COUNT = int(os.environ.get("SMDOWNSCALE_FUZZ_COUNT", "330"))

pytestmark = pytest.mark.skipif(fuzzing.available() is not None, reason=str(fuzzing.available()))


def test_mutated_inputs_never_crash_hang_or_leak_a_traceback(tmp_path):
    started = time.monotonic()
    cases = fuzzing.make_cases(str(tmp_path), COUNT, SEED)
    results = fuzzing.run_cases(cases, workers=2, timeout=60.0)
    table, failures = fuzzing.summarise(results)
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{kind}: " + " ".join(f"{k} {v}" for k, v in sorted(row.items()))
                        for kind, row in sorted(table.items()))
    print(f"\nfuzz seed {SEED}: {len(results)} cases in {elapsed:.0f} s ({summary})")
    assert len(results) == COUNT
    assert {r["kind"] for r in results} == {"smap", "ismn", "geotiff"}
    assert not failures, "\n\n".join(fuzzing.describe(r) for r in failures[:10])
    # the refusals say something (no empty messages), and SMAP ones name the granule
    for result in results:
        if result["outcome"] == "refused":
            message = result["report"]["message"]
            assert len(message) > 30, message
            if result["kind"] == "smap":
                assert os.path.basename(result["inputs"][0]) in message, message

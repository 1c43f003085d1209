"""
A short, fixed fuzzing budget for every target in fuzz/targets.py (atheris).

`make fuzz` runs them for minutes each; this keeps every target running
and crash-free on every `make test`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TARGETS = ["mcsqlr-request", "mcsqlr-response", "cluster-envelope", "tds-prelogin",
           "responder-datagram", "node-datagram", "signed-cluster-message"]
RUNS = 20000


def test_the_list_of_targets_is_complete() -> None:
    listed = subprocess.run([sys.executable, "-m", "fuzz.targets", "--list"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert listed.stdout.strip() == "targets: " + ", ".join(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_survives_a_fixed_budget(target: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fuzz.targets", target, f"-runs={RUNS}", "-seed=1",
         f"-artifact_prefix={tmp_path}/"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {RUNS} runs" in result.stderr
    assert not list(tmp_path.iterdir()), "the fuzzer saved a crashing input"

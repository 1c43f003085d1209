"""`make demo` keeps working: the whole invention on loopback, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"


def test_demo_fails_over_twice_and_loses_nothing() -> None:
    result = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("failed over to") == 2
    assert "0 lost; answered by A -> B -> C; the application saw no connectionLost" in (
        result.stdout)

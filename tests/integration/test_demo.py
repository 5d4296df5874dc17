"""``make demo`` runs the whole scenario from a fresh temporary directory and stops cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    for expected in (
        "HTTP 201",
        "scope-denied",
        "nonce-replayed",
        "agent SDK refuses",
        "provenance-mismatch",
        "certificate-revoked",
        "done: every process stopped",
    ):
        assert expected in text, expected

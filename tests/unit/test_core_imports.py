"""The pure parts of the issuance core import no SQLAlchemy (docs/decisions/0019)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PURE = ("ca.policy", "ca.requests", "ca.records", "ca.roles", "ca.revocation")


def test_policy_and_the_value_types_import_no_sqlalchemy() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in PURE)
        + "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"

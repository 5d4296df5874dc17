"""The responder is a read-only tier (decision 0018): importing what it runs (``ocsp.app``,
the process wiring and the gunicorn worker) loads nothing of issuance, the registry,
enrollment, ledger writing, the CA API or the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "ca.authority",
    "ca.registry",
    "ca.enrollment",
    "ca.ledger.signer",
    "ca.ledger.store",  # it appends to the ledger
    "ca.api",
    "cli",
    "ca.responder_certs",  # the CA side's issuance and rotation of responder certificates
    "ca.reconciliation",
    "ca.wiring",
    "ca.crl_publisher",
)


def _loaded_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "modules",
    [["ocsp.app"], ["ocsp.app", "ocsp.wiring", "ocsp.worker", "ocsp.readiness"]],
    ids=["ocsp.app", "served"],
)
def test_the_responder_imports_nothing_of_issuance(modules: list[str]) -> None:
    loaded = _loaded_after(modules)
    bad = sorted(
        name for name in loaded for f in FORBIDDEN if name == f or name.startswith(f + ".")
    )
    assert not bad, f"{modules} loads {bad}"
    assert "ocsp.app" in loaded


def test_the_contract_notices_a_forbidden_import() -> None:
    """The check itself works: the CA side's rotation module is seen when imported."""
    assert "ca.responder_certs" in _loaded_after(["ocsp.app", "ca.responder_certs"])


def test_the_ocsp_serve_command_loads_nothing_of_issuance() -> None:
    """``agentca ocsp serve`` resolved through the CLI (commands load lazily, ``cli.main``):
    the responder's process holds none of the CA's issuing code either."""
    code = (
        "import json, sys, click\n"
        "from cli.main import cli\n"
        "ocsp = cli.get_command(click.Context(cli), 'ocsp')\n"
        "serve = ocsp.get_command(click.Context(ocsp), 'serve')\n"
        "assert serve is not None\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout))
    forbidden = [f for f in FORBIDDEN if f != "cli"]
    bad = sorted(n for n in loaded for f in forbidden if n == f or n.startswith(f + "."))
    assert not bad, f"agentca ocsp serve loads {bad}"
    assert "cli.ocsp_commands" in loaded and "cli.ca_commands" not in loaded

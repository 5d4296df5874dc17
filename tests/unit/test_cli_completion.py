"""Shell completion (click's) works through the lazily loaded command table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _complete(shell: str, words: str, cword: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.update(COMP_WORDS=words, COMP_CWORD=str(cword), _AGENTCA_COMPLETE=f"{shell}_complete")
    code = "from cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_commands_and_subcommands_complete() -> None:
    top = _complete("bash", "agentca cr", 1)
    assert top.stdout.split() == ["plain,crl"], top.stderr
    sub = _complete("bash", "agentca crl ", 2)
    assert {"plain,publish", "plain,show"} <= set(sub.stdout.split()), sub.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_completion_script_is_generated(shell: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env["_AGENTCA_COMPLETE"] = f"{shell}_source"
    code = "from cli.main import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "_AGENTCA_COMPLETE" in result.stdout


def test_the_read_path_of_list_loads_no_cryptography() -> None:
    """`agentca list` reads records only: the modules it imports must not pull cryptography
    (about 40 ms of its start-up, issue 13's 0.5 s budget)."""
    code = (
        "import sys, cli.main, cli.context, cli.cert_commands, ca.queries;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_read_path_of_list_loads_no_orm() -> None:
    """`agentca list` reads through Core (ca.store.certificate_rows): importing the ORM and
    the declarative models is about 0.2 s of its start-up (decision 0030)."""
    code = (
        "import sys, cli.main, cli.context, cli.cert_commands, ca.store.certificate_rows;"
        "print(sorted(m for m in sys.modules"
        " if m.startswith('sqlalchemy.orm') or m == 'ca.store.models'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

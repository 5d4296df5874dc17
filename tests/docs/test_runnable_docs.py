"""The docs run: every ``sh runnable`` / ``python runnable`` block of README.md and docs/*.md,
in order, one bash session per file, against a throwaway CA (real SoftHSM2, SQLite, the real
``agentca`` CLI; ``agentca run`` when the file says ``<!-- runnable: serve -->``).

The conventions are docs/writing-docs.md. A failure names the block's file:line and its stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.docs.runner import Doc, extract_blocks, read_doc
from tests.docs.session import run_session
from tests.integration.conftest import AGENTCA
from tests.integration.servers import free_port, wait_http

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
#: the whole of one file's blocks; each block also has 60 s
FILE_TIMEOUT = 150.0


def _docs() -> list[Doc]:
    return [d for d in (read_doc(f, REPO) for f in DOC_FILES) if d.blocks]


def test_every_doc_parses() -> None:
    """Every Markdown file's fences are balanced (an unclosed fence would hide blocks)."""
    names = []
    for file in DOC_FILES:
        extract_blocks(file.read_text(encoding="utf-8"), str(file.relative_to(REPO)))
        names.append(file.name)
    assert "README.md" in names and "operators.md" in names


def test_the_readme_quick_start_is_runnable() -> None:
    """The docs test is not vacuous: the README's quick start is among what it runs."""
    readme = read_doc(REPO / "README.md", REPO)
    assert readme.blocks and "serve" in readme.markers
    assert any("agent.enroll" in b.text for b in readme.blocks)


def _base_env(work: Path) -> dict[str, str]:
    """The environment of a user in a checkout: no AGENTCA_* of the test run, agentca on PATH,
    this checkout's code importable, HOME and TMPDIR in the throwaway directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.pop("SOFTHSM2_CONF", None)
    venv_bin = Path(sys.executable).parent
    home, tmp = work.parent / "home", work.parent / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env.update(
        {
            "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": str(REPO),
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "AGENTCA_DATA_DIR": str(work / "var"),
        }
    )
    return env


@contextmanager
def _ca_servers(env: dict[str, str], log: Path) -> Iterator[dict[str, str]]:
    """``agentca run`` (CA API, OCSP, CRL publisher, checkpoints) on free ports; yields the
    variables the docs read the ports from."""
    ports = {
        "AGENTCA_LISTEN_PORT": str(free_port()),
        "AGENTCA_OCSP_LISTEN_PORT": str(free_port()),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [AGENTCA, "run"],
            env={**env, **ports, "AGENTCA_WORKERS": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            try:
                wait_http(f"http://127.0.0.1:{ports['AGENTCA_LISTEN_PORT']}/health", 60)
                wait_http(f"http://127.0.0.1:{ports['AGENTCA_OCSP_LISTEN_PORT']}/health", 60)
            except Exception:
                raise RuntimeError(
                    "agentca run did not start:\n" + log.read_text()[-3000:]
                ) from None
            yield ports
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(20)
                    break
                except subprocess.TimeoutExpired:
                    continue


@pytest.mark.parametrize("doc", _docs(), ids=lambda d: d.path)
def test_runnable_blocks(doc: Doc, tmp_path: Path) -> None:
    work = tmp_path / "checkout"
    work.mkdir()
    # what the docs call the checkout: .venv is the venv running these tests
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = _base_env(work)
    started = time.monotonic()
    init = subprocess.run(
        [AGENTCA, "init"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert init.returncode == 0, f"agentca init: {init.stderr}"
    with _ca_servers(env, tmp_path / "servers.log") if "serve" in doc.markers else _none() as extra:
        budget = FILE_TIMEOUT - (time.monotonic() - started)
        run_session(
            list(doc.blocks),
            cwd=work,
            env={**env, **extra},
            logdir=tmp_path / "blocks",
            python=sys.executable,
            file_timeout=budget,
        )


@contextmanager
def _none() -> Iterator[dict[str, str]]:
    yield {}

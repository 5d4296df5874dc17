"""The docs session (tests/docs/session.py) on small Markdown: state carries from block to
block, failures name file:line and stderr, timeouts end the session and what it started."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from tests.docs.runner import runnable_blocks
from tests.docs.session import DocsFailure, run_session


def _run(tmp_path: Path, markdown: str, **kw: float) -> list[str]:
    blocks = runnable_blocks(markdown, "t.md")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    results = run_session(
        blocks,
        cwd=tmp_path,
        env=env,
        logdir=tmp_path / "logs",
        python=sys.executable,
        **kw,  # type: ignore[arg-type]
    )
    return [r.stdout for r in results]


def test_variables_exports_and_cwd_carry_over_and_python_sees_exports(tmp_path: Path) -> None:
    md = (
        "```sh runnable\nX=one; export Y=two\nmkdir sub && cd sub\n```\n"
        "```sh\nexit 1\n```\n"
        "```sh runnable\necho $X $Y; pwd\n```\n"
        "```python runnable\nimport os\nprint(os.environ['Y'], os.getcwd())\n```\n"
    )
    out = _run(tmp_path, md)
    assert out[1] == f"one two\n{tmp_path / 'sub'}\n"
    assert out[2] == f"two {tmp_path / 'sub'}\n"


def test_a_failing_command_names_the_line_and_its_stderr(tmp_path: Path) -> None:
    md = "text\n\n```sh runnable\necho fine\necho oops >&2; false\necho never\n```\n"
    with pytest.raises(DocsFailure) as err:
        _run(tmp_path, md)
    message = str(err.value)
    assert message.startswith("t.md:5: the sh block at t.md:3 failed"), message
    assert "oops" in message


def test_pipefail_and_unset_variables_fail(tmp_path: Path) -> None:
    with pytest.raises(DocsFailure, match=r"block at t\.md:1 failed"):
        _run(tmp_path, "```sh runnable\nfalse | cat\n```\n")
    with pytest.raises(DocsFailure, match=r"block at t\.md:1 failed"):
        _run(tmp_path, "```sh runnable\necho $NOT_SET\n```\n")


def test_a_failing_python_block_fails_with_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(DocsFailure, match=r"(?s)python block at t\.md:1.*ZeroDivisionError"):
        _run(tmp_path, "```python runnable\n1 / 0\n```\n")


def test_a_hanging_block_times_out_and_its_background_children_die(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    md = f"```sh runnable\nsleep 300 & echo $! > {pidfile}\nsleep 300\n```\n"
    started = time.monotonic()
    with pytest.raises(DocsFailure, match="timed out"):
        _run(tmp_path, md, block_timeout=1.0)
    assert time.monotonic() - started < 20
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"background process {pid} survived the session")

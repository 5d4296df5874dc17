"""Run a file's runnable blocks, in order, in one bash session (docs/writing-docs.md).

One ``bash --noprofile --norc`` reads commands from a pipe; each block is written to a file
and sourced (shell blocks) or run by the test's Python (python blocks) with stdin from
/dev/null, its output to files of its own, so shell variables, exports and the working
directory carry from block to block as they would in a human's terminal. ``set -euo
pipefail`` holds throughout; the first failing command ends the session and the failure
names the block's ``file:line`` (and the failing line inside it) with its stderr.

Every block has a timeout, and so has the whole file; the session runs in a process group of
its own that is killed at the end, with whatever the blocks left running in the background.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.docs.runner import Block

BLOCK_TIMEOUT = 60.0


class DocsFailure(AssertionError):
    """A block failed, timed out, or the session died: the message says where and why."""


@dataclass(frozen=True)
class BlockResult:
    block: Block
    seconds: float
    stdout: str
    stderr: str


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return text[-limit:]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM the session's process group, then KILL what is left."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # bash is gone; its background children may not be
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return


def run_session(
    blocks: list[Block],
    *,
    cwd: Path,
    env: dict[str, str],
    logdir: Path,
    python: str,
    block_timeout: float = BLOCK_TIMEOUT,
    file_timeout: float = 150.0,
) -> list[BlockResult]:
    """Run ``blocks`` in order in one bash session; raise :class:`DocsFailure` on the first
    one that fails. Returns each block's output."""
    logdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["bash", "--noprofile", "--norc"],
        stdin=subprocess.PIPE,
        stdout=open(logdir / "session.out", "wb"),  # noqa: SIM115
        stderr=open(logdir / "session.err", "wb"),  # noqa: SIM115
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    assert proc.stdin is not None
    deadline = time.monotonic() + file_timeout
    results: list[BlockResult] = []

    def send(command: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(command.encode() + b"\n")
        proc.stdin.flush()

    try:
        send("set -euo pipefail")
        # the failing line inside a block, for the message (LINENO counts in the sourced file)
        send(f"trap 'echo \"docs: line $LINENO: exit $?\" >> {shlex.quote(str(logdir))}/where' ERR")
        for n, block in enumerate(blocks):
            stem = logdir / f"block-{n:02d}"
            out, err, done = (stem.with_suffix(s) for s in (".out", ".err", ".done"))
            if block.language == "python":
                script = stem.with_suffix(".py")
                script.write_text(block.text)
                run = f"{shlex.quote(python)} {shlex.quote(str(script))}"
            else:
                script = stem.with_suffix(".sh")
                script.write_text(block.text)
                run = f"source {shlex.quote(str(script))}"
            (logdir / "where").unlink(missing_ok=True)
            started = time.monotonic()
            send(
                f"{run} </dev/null >{shlex.quote(str(out))} 2>{shlex.quote(str(err))}; "
                f": > {shlex.quote(str(done))}"
            )
            limit = min(started + block_timeout, deadline)
            while not done.exists():
                if proc.poll() is not None:
                    where = _tail(logdir / "where").strip().splitlines()
                    line = block.line
                    hint = ""
                    if where and block.language != "python":
                        try:
                            inner = int(where[-1].split()[2].rstrip(":"))
                            line = block.line + inner
                            hint = f" ({where[-1].removeprefix('docs: ')})"
                        except (IndexError, ValueError):
                            pass
                    raise DocsFailure(
                        f"{block.path}:{line}: the {block.language} block at {block.where} "
                        f"failed{hint}\n--- stderr ---\n{_tail(err)}\n--- stdout ---\n"
                        f"{_tail(out, 1500)}{_tail(logdir / 'session.err', 1000)}"
                    )
                if time.monotonic() > limit:
                    what = "the file's" if limit == deadline else "the block's"
                    raise DocsFailure(
                        f"{block.where}: the {block.language} block timed out ({what} limit)"
                        f"\n--- stderr ---\n{_tail(err)}\n--- stdout ---\n{_tail(out, 1500)}"
                    )
                time.sleep(0.05)
            results.append(
                BlockResult(block, time.monotonic() - started, _tail(out, 20000), _tail(err))
            )
        send("exit 0")
        proc.stdin.close()
        proc.wait(10)
        return results
    finally:
        _kill_group(proc)

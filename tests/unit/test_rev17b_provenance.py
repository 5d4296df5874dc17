"""Review 17b: the agent SDK's drift recheck of an OMS-scheme model and of its prompt file.

Each test changes what the agent runs with and asserts that the next recheck
(``RuntimeProvenance.current``, which ``Agent.check_ready`` calls before every signature)
sees it, or that a file that is not one is refused with a clear error instead of hanging.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import RuntimeProvenance
from agent.errors import DigestError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "model"
    (model / "weights").mkdir(parents=True)
    (model / "config.json").write_text('{"a": 1}\n')
    (model / "weights" / "shard.bin").write_bytes(b"A" * 4096)
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(b"You are a careful trading agent.")
    return model, prompt


def runtime(model: Path, prompt: Path, clock: Clock) -> RuntimeProvenance:
    return RuntimeProvenance(
        "demo", model, prompt_path=prompt, model_scheme="oms-v1", recheck_seconds=1.0, clock=clock
    )


def rewrite_keeping_mtime(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place (same size, same inode) and set the mtime back."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_prompt_rewritten_in_place_with_its_mtime_set_back_is_drift(tmp_path: Path) -> None:
    model, prompt = make(tmp_path)
    clock = Clock()
    rp = runtime(model, prompt, clock)
    before = rp.current()
    rewrite_keeping_mtime(prompt, 8, b"RECKLESS")
    clock.now += 2
    after = rp.current()
    assert after.differences(before) == ["prompt"]


@pytest.mark.parametrize("change", ["byte", "added", "removed", "renamed", "reordered"])
def test_every_oms_model_change_is_seen_at_the_recheck(tmp_path: Path, change: str) -> None:
    model, prompt = make(tmp_path)
    clock = Clock()
    rp = runtime(model, prompt, clock)
    before = rp.current()
    shard = model / "weights" / "shard.bin"
    if change == "byte":
        rewrite_keeping_mtime(shard, 100, b"B")
    elif change == "added":
        (model / "weights" / "extra.bin").write_bytes(b"x")
    elif change == "removed":
        (model / "config.json").unlink()
    elif change == "renamed":  # same order, same digest: refused by name
        shard.rename(model / "weights" / "shard.bin.off")
    else:  # another order: another root
        shard.rename(model / "a-first.bin")
    clock.now += 2
    if change == "renamed":
        with pytest.raises(DigestError, match="renamed"):
            rp.current()
        return
    assert rp.current().differences(before) == ["model"]


def test_a_fifo_as_prompt_is_refused_not_waited_on(tmp_path: Path) -> None:
    model, _ = make(tmp_path)
    fifo = tmp_path / "prompt.fifo"
    os.mkfifo(fifo)
    code = (
        "import sys\n"
        "from agent import RuntimeProvenance\n"
        "from agent.errors import DigestError\n"
        "rp = RuntimeProvenance('demo', sys.argv[1], prompt_path=sys.argv[2],\n"
        "                       model_scheme='oms-v1')\n"
        "try:\n"
        "    rp.current()\n"
        "except DigestError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(model), str(fifo)],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a FIFO as prompt file hangs the agent")
    assert "refused:" in done.stdout and "not a regular file" in done.stdout, done.stderr


@pytest.mark.parametrize("what", ["directory", "device"])
def test_a_prompt_that_is_not_a_file_is_a_digest_error(tmp_path: Path, what: str) -> None:
    model, _ = make(tmp_path)
    prompt = tmp_path if what == "directory" else Path("/dev/zero")
    rp = RuntimeProvenance("demo", model, prompt_path=prompt, model_scheme="oms-v1")
    with pytest.raises(DigestError, match="not a regular file"):
        rp.current()

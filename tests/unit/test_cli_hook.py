"""One click group hook turns every command's failure into one line and its exit code.

Every leaf command of ``agentca`` is run with its callback replaced by one that raises, so
nothing below the CLI runs; what is checked is what the hook makes of the exception.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy.exc import OperationalError

from ca.errors import CAError, ErrorCode
from cli.exit_codes import exit_code
from cli.group import AgentcaGroup
from cli.main import cli


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))
        else:
            yield (*path, name)


def _groups(group: click.Group) -> Iterator[click.Group]:
    yield group
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _groups(command)


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        found = command.commands[name]
        command = found
    return command


LEAVES = list(_walk(cli))


def _argv(path: tuple[str, ...], tmp_path: Path) -> list[str]:
    """The command's path plus a value for each required parameter."""
    file = tmp_path / "input"
    file.write_text("{}")
    argv = list(path)
    for param in _command(path).params:
        if not param.required:
            continue
        if isinstance(param.type, click.Path):
            value = str(tmp_path if not param.type.file_okay else file)
        elif isinstance(param.type, click.Choice):
            value = str(param.type.choices[0])
        else:
            value = "x"
        if isinstance(param, click.Option):
            argv += [param.opts[0], value]
        else:
            argv.append(value)
    return argv


def _raising(exc: BaseException) -> Callable[..., None]:
    def callback(*_args: object, **_kwargs: object) -> None:
        raise exc

    return callback


def _run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: tuple[str, ...], exc: BaseException
) -> click.testing.Result:
    monkeypatch.setattr(_command(path), "callback", _raising(exc))
    return CliRunner().invoke(cli, _argv(path, tmp_path), catch_exceptions=False)


def test_the_tree_has_commands_in_every_group() -> None:
    assert len(LEAVES) >= 30
    assert {path[0] for path in LEAVES if len(path) > 1} >= {
        "agent", "apitoken", "config", "crl", "ledger", "model", "ocsp", "prompt", "scope",
        "token",
    }  # fmt: skip


def test_every_group_in_the_tree_carries_the_hook() -> None:
    for group in _groups(cli):
        assert isinstance(group, AgentcaGroup), group.name


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_leaf_command_ends_a_ca_error_as_one_line_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: tuple[str, ...]
) -> None:
    result = _run(monkeypatch, tmp_path, path, CAError(ErrorCode.NOT_FOUND, "no such thing"))
    assert result.exit_code == 6, (result.output, result.stderr)
    assert result.stderr == "agentca: error: no such thing [not-found]\n"
    assert result.stdout == ""


@pytest.mark.parametrize("code", list(ErrorCode))
def test_each_code_exits_with_its_mapped_number(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: ErrorCode
) -> None:
    result = _run(monkeypatch, tmp_path, ("crl", "show"), CAError(code, "it failed"))
    assert result.exit_code == exit_code(code)
    assert result.stderr == f"agentca: error: it failed [{code.slug}]\n"


@pytest.mark.parametrize(
    ("exc", "status", "line"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/srv/crl/.x.tmp"),
            14,
            "agentca: error: cannot write: the file system of /srv/crl is full: "
            "No space left on device [storage-full]\n",
        ),
        (
            OperationalError("SELECT 1", {}, Exception("refused")),
            12,
            "agentca: error: the database cannot be reached [database-unavailable]\n",
        ),
        (
            RuntimeError("secret internals"),
            1,
            "agentca: error: an internal error occurred [internal]\n",
        ),
    ],
    ids=["disk-full", "database-down", "bug"],
)
def test_other_exceptions_are_mapped_like_the_api_maps_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exc: Exception, status: int, line: str
) -> None:
    for path in (("agent", "list"), ("ledger", "checkpoint"), ("init",)):
        result = _run(monkeypatch, tmp_path, path, exc)
        assert (result.exit_code, result.stderr) == (status, line)


def test_an_hsm_error_keeps_its_slug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hsm.errors import HSMUnavailable

    result = _run(monkeypatch, tmp_path, ("ocsp", "rotate-signer"), HSMUnavailable("gone"))
    assert result.exit_code == 11
    assert result.stderr == "agentca: error: gone [hsm-unavailable]\n"


def test_click_keeps_its_own_exits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    usage = _run(monkeypatch, tmp_path, ("scope", "list"), click.UsageError("wrong"))
    assert usage.exit_code == 2 and "Error: wrong" in usage.stderr
    assert "agentca: error" not in usage.stderr
    exited = _run(monkeypatch, tmp_path, ("scope", "list"), click.exceptions.Exit(3))
    assert exited.exit_code == 3 and exited.stderr == ""
    interrupted = _run(monkeypatch, tmp_path, ("scope", "list"), KeyboardInterrupt())
    assert interrupted.exit_code == 1 and "Aborted!" in interrupted.stderr
    stopped = _run(monkeypatch, tmp_path, ("ledger", "verify"), SystemExit(13))
    assert stopped.exit_code == 13 and stopped.stderr == ""


def test_a_sub_group_invoked_on_its_own_has_the_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    group = cli.commands["scope"]
    monkeypatch.setattr(
        _command(("scope", "list")), "callback", _raising(CAError(ErrorCode.CONFIG, "bad"))
    )
    result = CliRunner().invoke(group, ["list"], catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (10, "agentca: error: bad [configuration]\n")


def test_groups_made_inside_a_hooked_group_inherit_it() -> None:
    @click.group(cls=AgentcaGroup)
    def top() -> None:
        """Top."""

    @top.group()
    def inner() -> None:
        """Inner."""

    @inner.command()
    def leaf() -> None:
        raise CAError(ErrorCode.ALREADY_REVOKED, "already")

    assert isinstance(inner, AgentcaGroup)
    result = CliRunner().invoke(inner, ["leaf"], catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (7, "agentca: error: already [already-revoked]\n")


def test_each_lazily_loaded_command_is_whole_in_a_fresh_process() -> None:
    """A command resolved alone (what ``agentca <command> ...`` does) has the same
    sub-commands as in the fully loaded tree: no module adds sub-commands to another's group
    without the table in ``cli.main`` pointing at it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import json, sys, click\n"
        "from cli.main import cli\n"
        "cmd = cli.get_command(click.Context(cli), sys.argv[1])\n"
        "print(json.dumps(sorted(getattr(cmd, 'commands', {}))))\n"
    )
    root = Path(__file__).resolve().parents[2]
    for name, command in sorted(cli.commands.items()):
        out = subprocess.run(
            [sys.executable, "-c", code, name], cwd=root, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == sorted(getattr(command, "commands", {})), name


def test_the_top_level_help_is_the_same_without_importing_the_commands() -> None:
    """``agentca --help`` lists the commands from cli.main's table (no command module is
    imported); its text must equal the help of the fully loaded tree, so the table's summaries
    cannot drift from the commands' own help."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from cli.main import cli\n"
        "lazy = CliRunner().invoke(cli, ['--help'], prog_name='agentca', terminal_width=100)\n"
        "loaded_before = sorted(m for m in sys.modules if m.startswith('cli.') and m not in\n"
        "    ('cli.main', 'cli.group', 'cli.exit_codes'))\n"
        "list(cli.commands.items())\n"
        "full = CliRunner().invoke(cli, ['--help'], prog_name='agentca', terminal_width=100)\n"
        "print(json.dumps([lazy.output, full.output, loaded_before]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    lazy, full, loaded_before = json.loads(out.stdout)
    assert lazy == full and "ocsp" in lazy
    assert loaded_before == [], f"--help imported {loaded_before}"

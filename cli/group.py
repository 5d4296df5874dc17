"""The one place the CLI turns a failure into a line on stderr and an exit code.

Every group of the ``agentca`` command is an :class:`AgentcaGroup`. Its ``invoke`` runs the
chosen sub-command, so whatever a command raises passes through the innermost group, which
prints ``agentca: error: <detail> [<slug>]`` and exits with the code ``cli.exit_codes`` maps
the error to. click's own exceptions (usage errors, ``--help``, ``Abort``) and a Ctrl-C keep
click's handling.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

import click

from ca.errors import CAError, as_ca_error
from cli.exit_codes import exit_code


def fail(error: CAError) -> NoReturn:
    """Print one clear line and exit with the error's code."""
    click.echo(f"agentca: error: {error.detail} [{error.code.slug}]", err=True)
    sys.exit(exit_code(error))


def _reader_went_away() -> NoReturn:
    """stdout's reader closed the pipe (``agentca list | head``): stop quietly, as Unix tools
    do (exit 141 = 128 + SIGPIPE), instead of reporting an internal error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(141)


class AgentcaGroup(click.Group):
    """A click group whose commands end every failure as one line and a mapped exit code.

    Sub-groups declared with ``@group.group()`` are of this class too; a group declared on
    its own takes ``@click.group(cls=AgentcaGroup)``.
    """

    group_class = type  # click: sub-groups made by @group.group() get this group's class

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            _reader_went_away()
        except Exception as exc:
            fail(as_ca_error(exc))


class LazyCommands(dict[str, click.Command]):
    """A group's commands, each imported from ``"module:attribute"`` on first use.

    ``get`` and ``[name]`` import one command; listing them (iteration, ``items``, ``values``,
    ``keys``, ``len``) imports all, as ``--help`` needs their short help anyway.
    """

    def __init__(self, table: Mapping[str, tuple[str, str]]) -> None:
        super().__init__()
        self._paths = {name: path for name, (path, _) in table.items()}
        self._summaries = {name: summary for name, (_, summary) in table.items()}

    def names(self) -> list[str]:
        """Every command's name, loaded or not."""
        return sorted(set(self._paths) | set(dict.keys(self)))

    def loaded(self, name: str) -> click.Command | None:
        """The command if its module is already imported, else ``None``."""
        return dict.get(self, name)

    def summary(self, name: str) -> str:
        """The first paragraph of the command's help, from the table (no import)."""
        return self._summaries.get(name, "")

    def _load(self, name: str) -> click.Command | None:
        if not dict.__contains__(self, name):
            path = self._paths.get(name)
            if path is None:
                return None
            module, _, attribute = path.partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{path} is not a click command")
            dict.__setitem__(self, name, command)
        return dict.__getitem__(self, name)

    def _load_all(self) -> None:
        for name in self._paths:
            self._load(name)

    def get(self, name: str, default: Any = None) -> Any:
        command = self._load(name)
        return default if command is None else command

    def __getitem__(self, name: str) -> click.Command:
        command = self._load(name)
        if command is None:
            raise KeyError(name)
        return command

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._paths or dict.__contains__(self, name))

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._paths.pop(name, None)
        dict.__setitem__(self, name, command)

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return dict.__iter__(self)

    def __len__(self) -> int:
        return len(self.names())

    def keys(self) -> dict_keys[str, click.Command]:
        self._load_all()
        return dict.keys(self)

    def values(self) -> dict_values[str, click.Command]:
        self._load_all()
        return dict.values(self)

    def items(self) -> dict_items[str, click.Command]:
        self._load_all()
        return dict.items(self)


class LazyGroup(AgentcaGroup):
    """The root group: its commands are :class:`LazyCommands`, and its help lists them from
    the table's summaries, so ``agentca --help`` imports no command module."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = self.commands
        if not isinstance(commands, LazyCommands):
            super().format_commands(ctx, formatter)
            return
        names = commands.names()
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            command = commands.loaded(name)
            if command is not None:
                if command.hidden:
                    continue
                text = command.get_short_help_str(limit)
            else:
                # click's own shortening, applied to the table's summary
                stand_in = click.Command(name, help=commands.summary(name))
                text = stand_in.get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

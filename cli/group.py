"""The one place the CLI turns a failure into a line on stderr and an exit code.

Every group of the ``agentca`` command is an :class:`AgentcaGroup`. Its ``invoke`` runs the
chosen sub-command, so whatever a command raises passes through the innermost group, which
prints ``agentca: error: <detail> [<slug>]`` and exits with the code ``cli.exit_codes`` maps
the error to. click's own exceptions (usage errors, ``--help``, ``Abort``) and a Ctrl-C keep
click's handling.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from ca.errors import CAError, as_ca_error
from cli.exit_codes import exit_code


def fail(error: CAError) -> NoReturn:
    """Print one clear line and exit with the error's code."""
    click.echo(f"agentca: error: {error.detail} [{error.code.slug}]", err=True)
    sys.exit(exit_code(error))


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
        except Exception as exc:
            fail(as_ca_error(exc))

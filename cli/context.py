"""Shared CLI plumbing: settings, runtime and small parsers (errors: ``cli.group``)."""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from ca.config import Settings, load_settings
from ca.errors import CAError, ErrorCode

if TYPE_CHECKING:  # the CA core is imported by the commands that open it, not by every one
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from ca.wiring import Runtime


def settings_from(ctx: click.Context) -> Settings:
    """Settings for this invocation (``--config`` beats ``$AGENTCA_CONFIG``)."""
    obj = ctx.find_root().obj or {}
    if "settings" not in obj:
        obj["settings"] = load_settings(config_file=obj.get("config"))
        ctx.find_root().obj = obj
    settings: Settings = obj["settings"]
    return settings


@contextmanager
def read_store(ctx: click.Context) -> Iterator[sessionmaker[Session]]:
    """Sessions on the CA database for commands that only read it: no HSM login, no key
    store, nothing created (a missing SQLite file or schema is NOT_INITIALISED)."""
    from ca.store.db import (
        make_engine,
        make_session_factory,
        require_database_file,
        require_schema,
    )

    url = settings_from(ctx).effective_database_url
    require_database_file(url)
    engine = make_engine(url)
    try:
        require_schema(engine)
        yield make_session_factory(engine)
    finally:
        engine.dispose()


@contextmanager
def read_engine(ctx: click.Context) -> Iterator[Engine]:
    """The CA database's engine for Core-only reads (``agentca list``): as ``read_store``,
    without the ORM (decision 0030)."""
    from ca.store.db import make_engine, require_database_file, require_schema

    url = settings_from(ctx).effective_database_url
    require_database_file(url)
    engine = make_engine(url)
    try:
        require_schema(engine)
        yield engine
    finally:
        engine.dispose()


@contextmanager
def runtime(ctx: click.Context, create: bool = False) -> Iterator[Runtime]:
    """Open the runtime for one command and close it afterwards."""
    from ca.wiring import open_runtime

    rt = open_runtime(settings_from(ctx), create=create)
    try:
        yield rt
    finally:
        rt.close()


def actor() -> str:
    """Who is acting, for the record: the operating-system user of the CLI."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h`` or ``7d`` to a timedelta."""
    m = _DURATION.match(text)
    if not m:
        raise CAError(ErrorCode.INVALID_VALIDITY, f"'{text}' is not a duration like 30m, 12h or 7d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})

"""Registers the console on the CA API app (``create_app``): its blueprint with every view."""

from __future__ import annotations

from flask import Flask

from ca.console import action_views, audit_views, bulk_views, operator_views
from ca.console.web import console

__all__ = ["register_console"]
_VIEWS = (
    operator_views,
    audit_views,
    action_views,
    bulk_views,
)  # imported for the routes they add to ``console``


def register_console(app: Flask) -> None:
    """Serve the console under ``/console`` (Jinja2 autoescaping is on for .html)."""
    app.register_blueprint(console)

"""Drift settings: window, baseline memory, feature weights, and thresholds per registration
and environment, read from a TOML file (docs/drift.md, "Thresholds").

A threshold and a mode are resolved most specific first: ``[drift.agents.NAME]``, then
``[drift.environments.ENV]``, then ``[drift]``. Unknown keys are refused, never ignored: a
misspelt threshold must not silently leave the default in force.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

MODES: Final = ("alert", "hold")
FEATURES: Final = (
    "rate",
    "bursts",
    "route_rate",
    "scope_rate",
    "routes",
    "transitions",
    "denials",
    "time_of_day",
    "new_routes",
    "new_scopes",
    "anchor",
)
DEFAULT_WEIGHTS: Final = {
    "rate": 1.0,
    "bursts": 1.0,  # sessions of calls started: a spike of work, not of one session's length
    "route_rate": 0.25,  # overlaps "rate": a spike of one route is both
    "scope_rate": 0.25,
    "routes": 1.0,
    "transitions": 1.0,
    "denials": 1.5,
    "time_of_day": 0.5,
    "new_routes": 1.5,  # per first-ever route in the window (at most 3 count)
    "new_scopes": 2.0,  # per first-ever scope in the window (at most 3 count)
    "anchor": 1.0,  # the last 4 h against the frozen anchor (slow drift; see docs/drift.md)
}
DEFAULT_THRESHOLD: Final = 14.0  # chosen from make bench-drift (docs/performance.md)
_DURATION: Final = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DriftSettingsError(ValueError):
    """A drift settings file or value is wrong (the message names the key)."""


def parse_seconds(text: str, key: str = "duration") -> int:
    """``90s``, ``5m``, ``12h`` or ``7d`` as seconds."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if not m or int(m.group(1)) <= 0:
        raise DriftSettingsError(f"{key}: '{text}' is not a duration like 5m, 12h or 7d")
    return int(m.group(1)) * _UNIT[m.group(2)]


@dataclass(frozen=True)
class Policy:
    """What to do when a window of one agent scores at or above ``threshold``."""

    threshold: float = DEFAULT_THRESHOLD
    mode: str = "alert"  # "alert": alert only; "hold": alert and put the certificate(s) on hold


@dataclass(frozen=True)
class DriftSettings:
    """Everything the analyser and the responder are configured with."""

    window: int = 300  # seconds scored together
    step: int = 60  # seconds between two scored windows (the bin length)
    training: int = 7 * 86400  # seconds of history before --since that build the baseline
    half_life: int = 7 * 86400  # a baseline observation counts half after this long
    min_training: int = 86400  # an agent with less history is not scored yet
    min_records: int = 50  # ... nor one with fewer records in its baseline
    default: Policy = field(default_factory=Policy)
    environments: Mapping[str, Policy] = field(default_factory=dict)
    agents: Mapping[str, Policy] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    webhook_url: str = ""
    webhook_timeout: float = 2.0

    def __post_init__(self) -> None:
        if self.window % self.step or self.window < self.step:
            raise DriftSettingsError("window must be a whole multiple of step")
        if self.window // self.step > 60:
            raise DriftSettingsError("window may span at most 60 steps")

    def policy(self, agent: str, environment: str | None) -> Policy:
        """The policy of ``agent`` (its own, else its environment's, else the default)."""
        if agent in self.agents:
            return self.agents[agent]
        if environment is not None and environment in self.environments:
            return self.environments[environment]
        return self.default

    def with_mode(self, mode: str) -> DriftSettings:
        """These settings with every policy's mode forced to ``mode`` (``--mode``)."""
        _mode(mode, "--mode")

        def force(p: Policy) -> Policy:
            return replace(p, mode=mode)

        return replace(
            self,
            default=force(self.default),
            environments={k: force(v) for k, v in self.environments.items()},
            agents={k: force(v) for k, v in self.agents.items()},
        )


def _mode(value: Any, key: str) -> str:
    if value not in MODES:
        raise DriftSettingsError(f"{key}: mode must be one of {', '.join(MODES)}")
    return str(value)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise DriftSettingsError(f"{key}: must be a positive number")
    return float(value)


def _policy(table: Any, key: str, base: Policy) -> Policy:
    if not isinstance(table, Mapping):
        raise DriftSettingsError(f"{key}: must be a table")
    unknown = set(table) - {"threshold", "mode"}
    if unknown:
        raise DriftSettingsError(f"{key}: unknown key '{sorted(unknown)[0]}'")
    threshold = _number(table.get("threshold", base.threshold), f"{key}.threshold")
    return Policy(threshold, _mode(table.get("mode", base.mode), f"{key}.mode"))


_TOP: Final = {
    "window",
    "step",
    "training",
    "half_life",
    "min_training",
    "min_records",
    "default_threshold",
    "mode",
    "weights",
    "environments",
    "agents",
    "webhook_url",
    "webhook_timeout",
}


def settings_from_mapping(doc: Mapping[str, Any]) -> DriftSettings:
    """Settings from a parsed TOML document holding a ``[drift]`` table (or none)."""
    unknown_tables = set(doc) - {"drift"}
    if unknown_tables:
        raise DriftSettingsError(f"unknown table '{sorted(unknown_tables)[0]}' (only [drift])")
    table = doc.get("drift", {})
    if not isinstance(table, Mapping):
        raise DriftSettingsError("[drift] must be a table")
    unknown = set(table) - _TOP
    if unknown:
        raise DriftSettingsError(f"drift: unknown key '{sorted(unknown)[0]}'")
    kw: dict[str, Any] = {}
    for key in ("window", "step", "training", "half_life", "min_training"):
        if key in table:
            kw[key] = parse_seconds(table[key], f"drift.{key}")
    if "min_records" in table:
        kw["min_records"] = int(_number(table["min_records"], "drift.min_records"))
    default = Policy(
        _number(table.get("default_threshold", DEFAULT_THRESHOLD), "drift.default_threshold"),
        _mode(table.get("mode", "alert"), "drift.mode"),
    )
    kw["default"] = default
    for name in ("environments", "agents"):
        sub = table.get(name, {})
        if not isinstance(sub, Mapping):
            raise DriftSettingsError(f"drift.{name}: must be a table")
        kw[name] = {k: _policy(v, f"drift.{name}.{k}", default) for k, v in sub.items()}
    weights = dict(DEFAULT_WEIGHTS)
    raw_weights = table.get("weights", {})
    if not isinstance(raw_weights, Mapping):
        raise DriftSettingsError("drift.weights: must be a table")
    for k, v in raw_weights.items():
        if k not in DEFAULT_WEIGHTS:
            raise DriftSettingsError(f"drift.weights: unknown feature '{k}'")
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise DriftSettingsError(f"drift.weights.{k}: must be a number >= 0")
        weights[k] = float(v)
    kw["weights"] = weights
    url = table.get("webhook_url", "")
    if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
        raise DriftSettingsError("drift.webhook_url: must be an http(s) URL")
    kw["webhook_url"] = url
    if "webhook_timeout" in table:
        kw["webhook_timeout"] = min(_number(table["webhook_timeout"], "drift.webhook_timeout"), 10)
    return DriftSettings(**kw)


def load_drift_settings(path: str | Path | None) -> DriftSettings:
    """Settings from the TOML file at ``path``; the defaults when ``path`` is ``None``."""
    if path is None:
        return DriftSettings()
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise DriftSettingsError(f"drift settings file {path} does not exist") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DriftSettingsError(f"drift settings file {path}: {exc}") from exc
    try:
        return settings_from_mapping(doc)
    except DriftSettingsError as exc:
        raise DriftSettingsError(f"drift settings file {path}: {exc}") from exc

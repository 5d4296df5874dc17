"""The files of deploy/ turned into processes, for the topology test (no systemd PID 1 here).

``settings_file`` is deploy/agentca.example.toml with chosen settings uncommented and given
values; ``env_file`` is deploy/systemd/agentca.env likewise; ``unit_process`` runs a unit's
``ExecStart`` line with the unit's ``Environment=`` and ``EnvironmentFile=`` as systemd would,
with only the paths of this checkout and of the test's files in place of /opt and /etc.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
AGENTCA = str(Path(sys.executable).with_name("agentca"))
INSTALLED = "/opt/agentca/venv/bin/agentca"
CONFIG = "/etc/agentca/agentca.toml"
ENV_FILE = "/etc/agentca/agentca.env"


def _toml_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string for what the tests pass


def settings_file(path: Path, values: Mapping[str, str | int | bool]) -> Path:
    """Write the example settings file with each of ``values`` uncommented and set."""
    text = (DEPLOY / "agentca.example.toml").read_text()
    for key, value in values.items():
        line = re.compile(rf"^# {re.escape(key)} = .*$", re.M)
        assert len(line.findall(text)) == 1, f"{key} is not in deploy/agentca.example.toml"
        text = line.sub(lambda _m: f"{key} = {_toml_value(value)}", text)  # noqa: B023
    path.write_text(text)
    return path


def env_file(path: Path, values: Mapping[str, str]) -> Path:
    """Write deploy/systemd/agentca.env with each of ``values`` uncommented and set."""
    text = (DEPLOY / "systemd" / "agentca.env").read_text()
    for key, value in values.items():
        line = re.compile(rf"^# {re.escape(key)}=.*$", re.M)
        assert len(line.findall(text)) == 1, f"{key} is not in deploy/systemd/agentca.env"
        text = line.sub(lambda _m: f"{key}={value}", text)  # noqa: B023
    path.write_text(text)
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of an ``EnvironmentFile=`` (comments and blank lines skipped)."""
    pairs = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


@dataclass(frozen=True)
class Unit:
    """What systemd would run for one unit of deploy/systemd."""

    name: str
    argv: tuple[str, ...]
    environment: Mapping[str, str]
    environment_file: str


def read_unit(name: str) -> Unit:
    """Parse ``deploy/systemd/<name>.service``: its ExecStart, Environment, EnvironmentFile."""
    text = (DEPLOY / "systemd" / f"{name}.service").read_text()
    starts = re.findall(r"^ExecStart=(.+)$", text, re.M)
    assert len(starts) == 1, name
    environment = dict(
        pair.split("=", 1) for pair in re.findall(r"^Environment=(\S+)$", text, re.M)
    )
    files = re.findall(r"^EnvironmentFile=-?(\S+)$", text, re.M)
    assert len(files) == 1, name
    return Unit(name, tuple(starts[0].split()), environment, files[0])


@dataclass(frozen=True)
class Host:
    """One simulated host's /etc/agentca: its settings file and its environment file."""

    config: Path
    env_file: Path

    def environ(self, unit: Unit | None = None) -> dict[str, str]:
        """The process environment of ``unit`` (or of a CLI run) on this host."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
        env.pop("SOFTHSM2_CONF", None)
        env["PYTHONPATH"] = str(REPO)
        declared = dict(unit.environment) if unit else {"AGENTCA_CONFIG": CONFIG}
        assert declared.get("AGENTCA_CONFIG") == CONFIG
        declared["AGENTCA_CONFIG"] = str(self.config)
        env.update(declared)
        if unit is not None:
            assert unit.environment_file == ENV_FILE
        env.update(read_env_file(self.env_file))
        return env

    def cli(self, *args: str, extra: Mapping[str, str] | None = None) -> str:
        """Run ``agentca <args>`` on this host (bounded); its stdout, or fail with stderr."""
        env = self.environ()
        env.update(extra or {})
        done = subprocess.run(
            [AGENTCA, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"agentca {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout.strip()


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


@contextmanager
def unit_process(name: str, host: Host, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run the unit's ExecStart on ``host`` in its own process group; stopped (TERM, then
    KILL of the whole group) on exit."""
    unit = read_unit(name)
    assert unit.argv[0] == INSTALLED, unit.argv
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [AGENTCA, *unit.argv[1:]],
            env=host.environ(unit),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            _stop_group(proc)

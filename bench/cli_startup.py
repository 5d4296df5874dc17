"""CLI start-up: median wall time of `agentca` commands next to `python -c pass`.

    python bench/cli_startup.py [--runs 7] [--json]

Targets (issue 13): `agentca --help` under 0.3 s, `agentca list` on SQLite under 0.5 s. The
commands run against a throwaway SQLite CA (`agentca init` in a temporary data directory,
SoftHSM2 token created there). Every figure is also given as a ratio to `python -c pass`
measured in the same run, since the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENTCA = [sys.executable, "-c", "from cli.main import main; main()"]
COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "agentca --help": [*AGENTCA, "--help"],
    "agentca list --help": [*AGENTCA, "list", "--help"],
    "agentca config show": [*AGENTCA, "config", "show"],
    "agentca list": [*AGENTCA, "list"],
    "agentca chain": [*AGENTCA, "chain"],
}
TARGETS = {"agentca --help": 0.3, "agentca list": 0.5}  # seconds (issue 13)


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=120, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[3:])} failed: {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
        env.update(AGENTCA_DATA_DIR=str(Path(tmp) / "data"), PYTHONPATH=str(ROOT))
        env.pop("SOFTHSM2_CONF", None)
        subprocess.run([*AGENTCA, "init"], env=env, capture_output=True, timeout=300, check=True)
        for argv in COMMANDS.values():
            _time(argv, env)  # warm the page cache
        samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.runs):  # interleaved, so a noisy moment hits every command alike
            for name, argv in COMMANDS.items():
                samples[name].append(_time(argv, env))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["python -c pass"]
    met = {name: medians[name] < limit for name, limit in TARGETS.items()}
    if args.json:
        print(json.dumps({"runs": args.runs, "median_seconds": medians, "met": met}, indent=2))
        return
    print(f"{'command':24} {'median':>9} {'x python -c pass':>17}  target   ({args.runs} runs)")
    for name, value in medians.items():
        target = ""
        if name in TARGETS:
            target = f"< {TARGETS[name]} s {'met' if met[name] else 'NOT met'}"
        print(f"{name:24} {value:8.3f}s {value / base:16.1f}x  {target}")


if __name__ == "__main__":
    main()

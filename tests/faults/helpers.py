"""Shared pieces of the fault tests: a CA on PostgreSQL set up through the CLI, agent CSRs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.extensions import Digest, Provenance, build_agent_csr
from tests.conftest import skip_or_fail
from tests.integration.conftest import register_for_issue, run_cli

MODEL = "d4" * 32
PROMPT = "e5" * 32
AGENT = "fault-agent"
FAKETIME_LIBS = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)


@dataclass
class Ca:
    data_dir: Path
    env: dict[str, str]
    api_token: str


def prepare_ca(data_dir: Path, pg_url: str, **settings: str) -> Ca:
    """``agentca init`` on ``pg_url`` with a managed SoftHSM2 token, one registered agent and
    an operator API token (all through the CLI: the test process never loads PKCS#11)."""
    env = {"AGENTCA_DATABASE_URL": pg_url, "AGENTCA_ENROLL_RATE_PER_SECOND": "1000"}
    env.update({"AGENTCA_" + k.upper(): v for k, v in settings.items()})
    data_dir.mkdir(parents=True, exist_ok=True)
    r = run_cli("init", data_dir=data_dir, env=env)
    assert r.returncode == 0, r.stderr
    register_for_issue(data_dir, AGENT, MODEL, PROMPT, model_type="m", env=env)
    api = run_cli("apitoken", "create", "faults", "--role", "operator", data_dir=data_dir, env=env)
    assert api.returncode == 0, api.stderr
    return Ca(data_dir, env, api.stdout.strip())


def agent_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    prov = Provenance("m", Digest.sha256_hex(MODEL), Digest.sha256_hex(PROMPT))
    csr = build_agent_csr(key, AGENT, prov)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def faketime_env(offset: str) -> dict[str, str]:
    """Environment that runs a process under libfaketime (Debian ``faketime``) at ``offset``."""
    lib = next((p for p in FAKETIME_LIBS if Path(p).is_file()), None)
    if lib is None or shutil.which("faketime") is None:
        skip_or_fail("libfaketime is not installed (apt-get install faketime)")
        raise AssertionError("unreachable")
    # (not FAKETIME_DONT_FAKE_MONOTONIC: with it, Python's timed waits get EINVAL)
    return {"LD_PRELOAD": lib, "FAKETIME": offset}

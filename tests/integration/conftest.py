"""Integration fixtures: a CA on the real SoftHSM2 token and a real database.

The PKCS#11 module is loaded once per process, so all in-process tests share the one token
of ``conftest_hsm`` (each CA generates its own randomly-labelled keys in it). CLI tests run
``agentca`` as a subprocess with their own managed token under their own data directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ca.config import Settings
from ca.wiring import Runtime, open_runtime
from hsm import TokenConfig
from tests.integration.conftest_hsm import responder_token_pin

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENTCA = str(Path(sys.executable).with_name("agentca"))


def settings_for(
    data_dir: Path, database_url: str, token: TokenConfig, **extra: object
) -> Settings:
    """Settings that use the process-wide SoftHSM2 token instead of a managed one (and the
    OCSP responder token beside it)."""
    assert token.softhsm2_conf
    token_home = Path(token.softhsm2_conf).parent.parent
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        manage_softhsm=False,
        pkcs11_module=token.module_path,
        softhsm2_conf=token.softhsm2_conf,
        token_label=token.token_label,
        hsm_pin_file=str(token_home / "secrets" / "user.pin"),
        ocsp_pin_file=str(responder_token_pin(token)),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def ca_settings(tmp_path: Path, db_url: str, hsm_config: TokenConfig) -> Settings:
    return settings_for(tmp_path, db_url, hsm_config)


@pytest.fixture
def ca_runtime(ca_settings: Settings) -> Iterator[Runtime]:
    """An initialised CA (root + issuing keys in SoftHSM2) on a fresh database."""
    rt = open_runtime(ca_settings, create=True)
    rt.authority.initialise("ec-p384", "ec-p256")
    yield rt
    rt.engine.dispose()


def run_cli(
    *args: str, data_dir: Path, env: dict[str, str] | None = None, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``agentca`` console script with its own data directory."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    full_env.pop("SOFTHSM2_CONF", None)
    full_env["AGENTCA_DATA_DIR"] = str(data_dir)
    full_env.update(env or {})
    return subprocess.run(
        [AGENTCA, *args], capture_output=True, text=True, env=full_env, timeout=120, check=False
    )


def write_agent_csr(
    path: Path, agent: str, model: str, prompt: str, model_type: str = "m"
) -> object:
    """Write a P-256 CSR carrying the provenance attribute; returns its private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ca.extensions import Digest, Provenance, build_agent_csr

    key = ec.generate_private_key(ec.SECP256R1())
    csr = build_agent_csr(
        key, agent, Provenance(model_type, Digest.sha256_hex(model), Digest.sha256_hex(prompt))
    )
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return key


def issue_args(
    csr: Path,
    agent: str,
    model: str,
    prompt: str,
    *,
    officer: str = "o@example.com",
    environment: str = "prod",
    scope: str = "read_book",
    model_type: str = "m",
) -> list[str]:
    """Arguments of ``agentca issue`` for one agent certificate."""
    return [
        "issue",
        "--csr",
        str(csr),
        "--agent",
        agent,
        "--scope",
        scope,
        "--model-type",
        model_type,
        "--model-digest",
        model,
        "--prompt-digest",
        prompt,
        "--officer",
        officer,
        "--environment",
        environment,
    ]


def register_for_issue(
    data_dir: Path,
    agent: str,
    model: str,
    prompt: str,
    *,
    officer: str = "o@example.com",
    environment: str = "prod",
    scopes: tuple[str, ...] = ("read_book",),
    model_type: str = "m",
    key_types: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> None:
    """Register ``agent`` with the CLI so ``agentca issue`` passes policy for it.

    Adds the scopes to the catalogue and the model to the inventory (either may already be
    there), then registers the agent with exactly these contents.
    """
    for scope in scopes:
        r = run_cli("scope", "add", scope, data_dir=data_dir, env=env)
        assert r.returncode == 0 or "already exists" in r.stderr, r.stderr
    r = run_cli(
        "model",
        "add",
        model,
        "--model-type",
        model_type,
        "--environment",
        environment,
        data_dir=data_dir,
        env=env,
    )
    assert r.returncode == 0 or "[conflict]" in r.stderr, r.stderr
    args = ["agent", "register", agent, "--officer", officer, "--environment", environment]
    args += ["--model-type", model_type, "--model-digest", model, "--prompt-digest", prompt]
    for scope in scopes:
        args += ["--scope", scope]
    for key_type in key_types:
        args += ["--key-type", key_type]
    r = run_cli(*args, data_dir=data_dir, env=env)
    assert r.returncode == 0, r.stderr

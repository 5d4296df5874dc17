"""Shared SoftHSM2 fixtures for integration tests.

python-pkcs11 loads the PKCS#11 module once per process, and SoftHSM2 reads ``SOFTHSM2_CONF``
when it is loaded, so a test process can use exactly one SoftHSM2 configuration. These fixtures
therefore provision ONE token per process (cached at module level). Tests that need another
configuration (wrong PIN, another token directory) must run in a subprocess: see ``run_python``.

The fixtures are loaded for the whole suite through ``pytest_plugins`` in ``tests/conftest.py``:
a test just names ``hsm_config`` or ``hsm_keystore``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm import KeyStore, TokenConfig, ensure_softhsm_token

REPO_ROOT = Path(__file__).resolve().parents[2]
RESPONDER_TOKEN = "agentca-ocsp"  # Settings.ocsp_token_label's default
_PROCESS_TOKEN: dict[str, TokenConfig] = {}
_RESPONDER_PINS: dict[str, Path] = {}


def process_token(tmp_path_factory: pytest.TempPathFactory) -> TokenConfig:
    """The one SoftHSM2 token this test process uses (created on first call)."""
    if "config" not in _PROCESS_TOKEN:
        data_dir = tmp_path_factory.mktemp("agentca-hsm")
        token = ensure_softhsm_token(data_dir)
        responder_token_pin(token)  # before this process loads the module: it sees both
        _PROCESS_TOKEN["config"] = token
    return _PROCESS_TOKEN["config"]


def responder_token_pin(token: TokenConfig) -> Path:
    """The PIN file of the OCSP responder token next to ``token`` (same SoftHSM2
    configuration, its own PIN), created on first call (decision 0018)."""
    assert token.softhsm2_conf
    if token.softhsm2_conf not in _RESPONDER_PINS:
        from ca.responder_token import provision_softhsm_token

        conf = Path(token.softhsm2_conf)
        pin = conf.parent.parent / "secrets" / "ocsp-user.pin"
        provision_softhsm_token(token.module_path, conf, RESPONDER_TOKEN, pin)
        _RESPONDER_PINS[token.softhsm2_conf] = pin
    return _RESPONDER_PINS[token.softhsm2_conf]


@pytest.fixture(scope="session")
def hsm_config(tmp_path_factory: pytest.TempPathFactory) -> TokenConfig:
    """Config of the process-wide development token."""
    return process_token(tmp_path_factory)


@pytest.fixture(scope="session")
def hsm_keystore(hsm_config: TokenConfig) -> Iterator[KeyStore]:
    """A key store on the process-wide token."""
    store = KeyStore(hsm_config)
    yield store
    store.close()


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (own PKCS#11 module state), the repo importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.pop("SOFTHSM2_CONF", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )

"""The throwaway dev mode: ``key_store = "software"`` with ``dev_mode = true``.

The CA starts with its keys in this process's memory, issues, and says so loudly; without
``dev_mode`` it refuses, and another process refuses the hierarchy whose keys it lacks.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from ca.config import Settings, load_settings
from ca.errors import CAError, ErrorCode
from ca.requests import IssuanceRequest
from ca.wiring import ensure_initialised, open_runtime
from hsm import SoftKeyStore
from tests.unit.helpers import sample_extensions

REPO_ROOT = Path(__file__).resolve().parents[2]


def _dev_settings(tmp_path: Path, db_url: str, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        key_store="software",
        dev_mode=True,
        **extra,  # type: ignore[arg-type]
    )


def test_software_store_is_refused_without_dev_mode(tmp_path: Path) -> None:
    env = {"AGENTCA_DATA_DIR": str(tmp_path), "AGENTCA_KEY_STORE": "software"}
    settings = load_settings(env)
    assert settings.key_store == "software" and not settings.dev_mode
    with pytest.raises(CAError) as err:
        open_runtime(settings, create=True)
    assert err.value.code is ErrorCode.CONFIG
    assert "dev_mode = true" in err.value.detail and "memory" in err.value.detail


def test_software_store_is_refused_when_a_real_hsm_is_configured(tmp_path: Path) -> None:
    env = {
        "AGENTCA_DATA_DIR": str(tmp_path),
        "AGENTCA_KEY_STORE": "software",
        "AGENTCA_DEV_MODE": "1",
        "AGENTCA_PKCS11_MODULE": "/usr/lib/vendor/libhsm.so",
        "AGENTCA_MANAGE_SOFTHSM": "0",
    }
    settings = load_settings(env)
    assert settings.dev_mode and not settings.manage_softhsm
    with pytest.raises(CAError) as err:
        open_runtime(settings, create=True)
    assert err.value.code is ErrorCode.CONFIG and "real HSM" in err.value.detail


def test_an_unknown_key_store_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(CAError) as err:
        load_settings({"AGENTCA_DATA_DIR": str(tmp_path), "AGENTCA_KEY_STORE": "memory"})
    assert err.value.code is ErrorCode.CONFIG
    assert "pkcs11, software" in err.value.detail


def test_dev_mode_starts_warns_and_issues(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _dev_settings(tmp_path, db_url)
    with caplog.at_level(logging.WARNING, logger="agentca.keysetup"):
        assert ensure_initialised(settings) is True  # what `agentca serve` does first
    assert any("DEV MODE" in r.getMessage() for r in caplog.records)
    assert not (settings.data_dir / "hsm").exists()  # no token was made

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agentca.keysetup"):
        rt = open_runtime(settings)  # what each worker does next, in the same process tree
    try:
        assert any("vanish" in r.getMessage() for r in caplog.records)  # at every start
        assert isinstance(rt.keys, SoftKeyStore)
        record = rt.authority.issue(
            IssuanceRequest(
                public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
                agent_name="DevAgent-01",
                extensions=sample_extensions(),
                validity=timedelta(hours=1),
            ),
            actor="test",
        )
        assert record.certificate is not None
        issuing, root = rt.authority.chain()
        verifier = PolicyBuilder().store(Store([root])).build_client_verifier()
        assert verifier.verify(record.certificate, [issuing]).chain[-1] == root
    finally:
        rt.close()


def test_another_process_refuses_the_hierarchy_whose_keys_it_lacks(
    tmp_path: Path, db_url: str
) -> None:
    settings = _dev_settings(tmp_path, db_url)
    assert ensure_initialised(settings) is True
    code = (
        "import sys\n"
        "from ca.config import load_settings\n"
        "from ca.errors import CAError\n"
        "from ca.wiring import open_runtime\n"
        "try:\n"
        "    open_runtime(load_settings())\n"
        "except CAError as exc:\n"
        "    print(exc.code.name, exc.detail)\n"
        "    sys.exit(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCA_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        AGENTCA_DATA_DIR=str(settings.data_dir),
        AGENTCA_DATABASE_URL=db_url,
        AGENTCA_KEY_STORE="software",
        AGENTCA_DEV_MODE="1",
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("HSM_KEY_MISSING ")
    assert "already holds a CA hierarchy" in done.stdout
    assert "empty database" in done.stdout
    assert "DEV MODE" in done.stderr  # the warning came first

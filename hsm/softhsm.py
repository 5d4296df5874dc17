"""Provision a development SoftHSM2 token under a data directory.

Layout (directories 0700, PIN files 0600)::

    data_dir/hsm/softhsm2.conf   tokendir = data_dir/hsm/tokens, file object store
    data_dir/hsm/tokens/         the token's objects
    data_dir/secrets/user.pin    the user PIN the key store logs in with
    data_dir/secrets/so.pin      the security officer PIN

PINs never reach a command line: the token is initialised by ``python -m hsm._init_token``,
which reads them from stdin and calls C_InitToken / C_InitPIN through ctypes.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from hsm.errors import HSMError, PinFileError, TokenNotFound
from hsm.keystore import TokenConfig

__all__ = [
    "KNOWN_MODULE_PATHS",
    "ensure_softhsm_token",
    "find_pkcs11_module",
    "init_token_command",
    "read_pin_file",
    "softhsm_config_text",
]

KNOWN_MODULE_PATHS: tuple[str, ...] = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def find_pkcs11_module() -> str:
    """Return the path of an installed SoftHSM2 PKCS#11 module, or raise ``TokenNotFound``."""
    for path in KNOWN_MODULE_PATHS:
        if os.path.isfile(path):
            return path
    raise TokenNotFound(
        "no SoftHSM2 PKCS#11 module found (looked in "
        + ", ".join(KNOWN_MODULE_PATHS)
        + "); install it with: apt-get install softhsm2"
    )


def read_pin_file(path: str | os.PathLike[str]) -> str:
    """Return the PIN stored in ``path`` without its trailing newline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PinFileError(f"PIN file {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise PinFileError(f"cannot read PIN file {os.fspath(path)!r}: {exc.strerror}") from None
    pin = text.rstrip("\r\n")
    if not pin:
        raise PinFileError(f"PIN file {os.fspath(path)!r} is empty")
    return pin


def init_token_command() -> list[str]:
    """The argv that initialises a token: no PIN in it (PINs go on stdin)."""
    return [sys.executable, "-m", "hsm._init_token"]


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_new_private_file(path: Path, text: str) -> bool:
    """Create ``path`` with mode 0600 holding ``text``; False if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return True


def softhsm_config_text(token_dir: Path) -> str:
    """The ``softhsm2.conf`` of a managed token whose objects live in ``token_dir``."""
    return (
        "# SoftHSM2 configuration of the agentca development token (generated).\n"
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )


def ensure_softhsm_token(
    data_dir: Path,
    label: str = "agentca",
    module_path: str | None = None,
    create: bool = True,
) -> TokenConfig:
    """Create (first call, with ``create``) or reuse the SoftHSM2 token ``label`` under
    ``data_dir``.

    Safe to call from several processes at once (a file lock serialises provisioning). A token
    is created only together with both its PIN files, and only with ``create``: once they
    exist, a token directory that is missing is a token that is away (unmounted, being
    restored), and this raises :class:`TokenNotFound` instead of initialising an empty token
    in its place; one PIN file without the other is refused too (decision 0045).
    """
    module = module_path or find_pkcs11_module()
    if not os.path.isfile(module):
        raise TokenNotFound(f"PKCS#11 module not found at {module!r}")
    root = Path(data_dir).resolve()
    hsm_dir, token_dir, secret_dir = root / "hsm", root / "hsm" / "tokens", root / "secrets"
    if not create and not hsm_dir.is_dir():
        raise TokenNotFound(f"no SoftHSM2 token was provisioned under {str(root)!r}")
    if create:
        for directory in (hsm_dir, secret_dir):
            _private_dir(directory)
    conf = hsm_dir / "softhsm2.conf"
    user_pin_file, so_pin_file = secret_dir / "user.pin", secret_dir / "so.pin"

    with open(hsm_dir / ".provision.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        present = [path.exists() for path in (so_pin_file, user_pin_file)]
        if all(present):  # provisioned before: reuse, never re-create
            if not token_dir.is_dir():
                raise TokenNotFound(
                    f"the SoftHSM2 token directory {str(token_dir)!r} is missing while the "
                    f"token's PIN files exist: restore the directory (agentca never creates a "
                    f"new token in place of one that is away), or remove {str(secret_dir)!r} "
                    "too to start from nothing"
                )
            user_pin, so_pin = read_pin_file(user_pin_file), read_pin_file(so_pin_file)
        elif any(present):
            missing = so_pin_file if not present[0] else user_pin_file
            raise HSMError(
                f"the PIN file {str(missing)!r} is missing while the other exists: restore it "
                "(agentca creates a token only with both, never in place of one that is away)"
            )
        elif not create:
            raise TokenNotFound(
                f"no PIN files under {str(secret_dir)!r}: the token was never provisioned "
                "here, or the secrets are away; run 'agentca init' or restore them"
            )
        else:
            if not conf.exists():
                tmp = hsm_dir / "softhsm2.conf.tmp"
                tmp.write_text(softhsm_config_text(token_dir), encoding="utf-8")
                os.replace(tmp, conf)
            created_pins = [
                path
                for path in (so_pin_file, user_pin_file)
                if _write_new_private_file(path, secrets.token_urlsafe(24) + "\n")
            ]
            user_pin, so_pin = read_pin_file(user_pin_file), read_pin_file(so_pin_file)
            _private_dir(token_dir)
            try:
                result = _run_init(module, label, conf, so_pin=so_pin, user_pin=user_pin)
                if not result["created"]:
                    raise HSMError(
                        f"the SoftHSM2 token {label!r} under {str(root)!r} already exists but "
                        f"its PIN files were missing; restore {str(secret_dir)!r} or remove "
                        f"{str(token_dir)!r}"
                    )
            except BaseException:
                for path in created_pins:  # a failed first run leaves no half-provisioned PINs
                    path.unlink(missing_ok=True)
                raise
    return TokenConfig(
        module_path=module, token_label=label, user_pin=user_pin, softhsm2_conf=str(conf)
    )


def _run_init(module: str, label: str, conf: Path, *, so_pin: str, user_pin: str) -> dict[str, int]:
    env = dict(os.environ)
    env["SOFTHSM2_CONF"] = str(conf)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    request = json.dumps({"module": module, "label": label, "so_pin": so_pin, "user_pin": user_pin})
    proc = subprocess.run(
        init_token_command(),
        input=request,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        detail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise HSMError(f"initialising the SoftHSM2 token {label!r} failed: {detail[0]}")
    result: dict[str, int] = json.loads(proc.stdout)
    return result

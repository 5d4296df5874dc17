"""The OCSP responder's own token: it holds responder keys only, never a CA key (decision 0018).

The CA side (``ca.responder_certs``) generates responder keys into it; the responder process
opens it with its own PIN and never sees the CA token's PIN. A managed SoftHSM2 install keeps
both tokens in the one token directory under the data dir, so they share one SoftHSM2
configuration: python-pkcs11 loads one module per process with one ``SOFTHSM2_CONF``, and the
CA process must reach both tokens through it (``hsm.keystore`` refuses a second
configuration). Separate tokens with separate PINs still keep the keys apart: SoftHSM2
encrypts each token's private objects under its own user PIN.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
from pathlib import Path

from ca.config import Settings, read_secret_file
from ca.errors import CAError, ErrorCode
from hsm import TokenConfig, find_pkcs11_module
from hsm.softhsm import init_token_command

__all__ = ["provision_softhsm_token", "responder_token_config"]

_ROOT = Path(__file__).resolve().parent.parent


def _softhsm_conf(settings: Settings) -> Path:
    if settings.softhsm2_conf:
        return Path(settings.softhsm2_conf)
    return settings.data_dir / "hsm" / "softhsm2.conf"


def responder_token_config(settings: Settings, create: bool = False) -> TokenConfig:
    """The responder's token: ``ocsp_token_label`` with the PIN in ``ocsp_pin_file``.

    With a managed SoftHSM2 (the default) and ``create``, the token is created next to the
    CA's on first use (the CA side calls it so; the responder never creates anything).
    """
    if settings.ocsp_token_label == settings.token_label:
        raise CAError(
            ErrorCode.CONFIG,
            "ocsp_token_label must name another token than token_label: the OCSP responder's "
            "token holds responder keys only, never a CA key",
        )
    managed = not (settings.pkcs11_module and not settings.manage_softhsm)
    pin_file = settings.effective_ocsp_pin_file
    _refuse_ca_pin(settings, pin_file, create)
    if managed:
        conf = _softhsm_conf(settings)
        module = settings.pkcs11_module or find_pkcs11_module()
        if create:
            if not conf.exists():  # the CA token makes the configuration and directories
                from ca.keysetup import token_config

                token_config(settings, create=True)
            provision_softhsm_token(module, conf, settings.ocsp_token_label, pin_file)
        elif not conf.exists() or not pin_file.exists():
            raise CAError(
                ErrorCode.NOT_INITIALISED,
                f"no OCSP responder token under {settings.data_dir}; run 'agentca init' or "
                "'agentca ocsp rotate-signer' first",
            )
        pin = read_secret_file(pin_file, "OCSP HSM PIN")
        return TokenConfig(module, settings.ocsp_token_label, pin, str(conf))
    pin = read_secret_file(pin_file, "OCSP HSM PIN")
    return TokenConfig(
        settings.pkcs11_module,
        settings.ocsp_token_label,
        pin,
        settings.softhsm2_conf or None,
    )


def _refuse_ca_pin(settings: Settings, pin_file: Path, compare_contents: bool) -> None:
    """The responder's PIN must not be the CA token's: not the same file (the responder would
    read the CA PIN; a managed token would even be created with the CA's SO PIN beside it),
    and, checked on the CA side only (``compare_contents``: the responder never opens the CA
    PIN file), not the same PIN either."""
    ca_pin_file = settings.effective_pin_file
    if pin_file.resolve() == ca_pin_file.resolve():
        raise CAError(
            ErrorCode.CONFIG,
            f"ocsp_pin_file names the CA token's PIN file ({ca_pin_file}): the OCSP "
            "responder must have a PIN of its own and never read the CA's",
        )
    if compare_contents and pin_file.exists() and ca_pin_file.exists():
        same = read_secret_file(pin_file, "OCSP HSM PIN") == read_secret_file(
            ca_pin_file, "HSM PIN"
        )
        if same:
            raise CAError(
                ErrorCode.CONFIG,
                f"the OCSP responder's PIN ({pin_file}) is the CA token's PIN: whoever holds "
                "the responder's PIN could log in to the CA token; give it a PIN of its own",
            )


def _new_secret(path: Path) -> bool:
    """Write a fresh random secret to ``path`` (0600) unless it exists; True if written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(24) + "\n")
    return True


def provision_softhsm_token(module: str, conf: Path, label: str, user_pin_file: Path) -> bool:
    """Create the SoftHSM2 token ``label`` in ``conf``'s token directory with its own PINs
    (``user_pin_file`` and a ``*-so.pin`` beside it); True when the token was created.

    Once both PIN files exist the token was provisioned before and nothing is created again:
    a token that is away is reported when it is opened, never replaced by an empty one
    (decision 0045)."""
    so_pin_file = user_pin_file.with_name(user_pin_file.name.replace("user", "so", 1))
    if so_pin_file == user_pin_file:
        so_pin_file = user_pin_file.with_name("so-" + user_pin_file.name)
    with open(conf.parent / ".provision.lock", "a") as lock:  # the lock hsm.softhsm takes
        fcntl.flock(lock, fcntl.LOCK_EX)
        present = [path.exists() for path in (so_pin_file, user_pin_file)]
        if all(present):
            return False
        if any(present):  # one PIN without the other: never a new token in place of one away
            missing = so_pin_file if not present[0] else user_pin_file
            raise CAError(
                ErrorCode.HSM_FAILURE,
                f"the PIN file {missing} of the token {label!r} is missing while the other "
                "exists: restore it",
            )
        written = [path for path in (so_pin_file, user_pin_file) if _new_secret(path)]
        try:
            created = _init_token(module, conf, label, so_pin_file, user_pin_file)
            if not created:
                raise CAError(
                    ErrorCode.HSM_FAILURE,
                    f"the token {label!r} already exists but its PIN files were missing; "
                    f"restore {user_pin_file} or remove the token",
                )
        except BaseException:
            for path in written:  # a failed provisioning leaves no half-made PINs behind
                path.unlink(missing_ok=True)
            raise
    return created


def _init_token(
    module: str, conf: Path, label: str, so_pin_file: Path, user_pin_file: Path
) -> bool:
    request = {
        "module": module,
        "label": label,
        "so_pin": read_secret_file(so_pin_file, "OCSP HSM SO PIN"),
        "user_pin": read_secret_file(user_pin_file, "OCSP HSM PIN"),
    }
    env = dict(os.environ)
    env["SOFTHSM2_CONF"] = str(conf)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        init_token_command(),
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CAError(ErrorCode.HSM_FAILURE, f"creating the token {label!r} failed: {detail}")
    return bool(json.loads(proc.stdout)["created"])

"""A PKCS#11 key store: one lazily opened, logged-in session per process, behind one lock.

python-pkcs11 loads a module once per process and does not serialise calls into it; two sessions
signing at the same moment crashed SoftHSM2. So every PKCS#11 call in this process goes through
one process-wide re-entrant lock, each ``KeyStore`` keeps one session, and a store used in a
forked child (gunicorn workers) re-initialises the module and logs in again.

A lost token (device removed, SoftHSM2's token directory gone, CKR_GENERAL_ERROR) drops the
session; the store reopens it by itself, re-initialising the module (SoftHSM2 only re-reads its
token files then), with bounded exponential backoff (``hsm.backoff``). Until it succeeds every
call fails fast with ``HSMUnavailable``: no request waits longer than one short reopen attempt.

Why one module of this size: the process-wide lock, the per-fork re-initialisation, the module
generation and the reopen-with-backoff state machine are one discipline; split across modules, a
call could bypass part of it.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e

from hsm.backoff import Backoff
from hsm.errors import (
    HSMError,
    HSMUnavailable,
    KeyExists,
    KeyNotFound,
    MechanismUnsupported,
    PinIncorrect,
    TokenNotFound,
)
from hsm.keys import HsmEcPrivateKey, HsmEd25519PrivateKey, HsmPrivateKey, HsmRsaPrivateKey
from hsm.keytypes import KeyType
from hsm.observe import observe_sign
from hsm.status import HsmStatus

__all__ = ["HsmStatus", "KeyStore", "TokenConfig"]

T = TypeVar("T")

# DER of the EC_PARAMS (named-curve OIDs) we generate and recognise.
_EC_PARAMS: dict[KeyType, bytes] = {
    KeyType.EC_P256: bytes.fromhex("06082a8648ce3d030107"),  # 1.2.840.10045.3.1.7
    KeyType.EC_P384: bytes.fromhex("06052b81040022"),  # 1.3.132.0.34
    KeyType.ED25519: bytes.fromhex("06032b6570"),  # 1.3.101.112
}
_ED25519_PRINTABLE = bytes.fromhex("130c") + b"edwards25519"
_CURVES: dict[KeyType, ec.EllipticCurve] = {
    KeyType.EC_P256: ec.SECP256R1(),
    KeyType.EC_P384: ec.SECP384R1(),
}
# Mechanisms a key type needs from the slot: (key-pair generation, signing).
_NEEDS: dict[KeyType, tuple[Mechanism, Mechanism]] = {
    KeyType.EC_P256: (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    KeyType.EC_P384: (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    KeyType.RSA_2048: (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.SHA256_RSA_PKCS),
    KeyType.RSA_3072: (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.SHA256_RSA_PKCS),
    KeyType.RSA_4096: (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.SHA256_RSA_PKCS),
    KeyType.ED25519: (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA),
}
# Errors after which a fresh session (and login) may succeed: retried once.
_STALE = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.UserNotLoggedIn,
    p11e.ObjectHandleInvalid,
    p11e.KeyHandleInvalid,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
)
# Errors that say the token or device itself is failing or gone (not the request): the session
# is dropped and reopened with backoff, and callers see ``HSMUnavailable``.
_DOWN = (
    p11e.GeneralError,
    p11e.DeviceError,
    p11e.DeviceMemory,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.FunctionFailed,
    p11e.SessionCount,
)
_RECOVERABLE = _STALE + _DOWN
# Time one reopen attempt may take (the process lock is held meanwhile): the first open of a
# process gets longer, for SoftHSM2's transient states while several workers log in at once.
FIRST_OPEN_BUDGET = 2.0
REOPEN_BUDGET = 0.3
_UNSUPPORTED = (
    p11e.MechanismInvalid,
    p11e.MechanismParamInvalid,
    p11e.DomainParamsInvalid,
    p11e.KeySizeRange,
    p11e.FunctionNotSupported,
    p11e.AttributeValueInvalid,
    p11e.TemplateInconsistent,
)

# ---- process-wide state -------------------------------------------------------------------------

_LOCK = threading.RLock()
"""Serialises every PKCS#11 call made by this process."""
_LIBS: dict[str, Any] = {}
"""Loaded modules by path, with the pid that (re)initialised each one and its SOFTHSM2_CONF."""
_LIB_PID: dict[str, int] = {}
_LIB_CONF: dict[str, str | None] = {}
_LIB_GENERATION: dict[str, int] = {}
"""Bumped whenever a module is (re)initialised: every session and object handle any store of
this process held on it is then void, and the numbers may be handed out again for other
objects. A store whose session predates the current generation drops it (and its handles)
before its next call, so a reused handle number can never sign with another store's key."""


def _bump_generation(path: str) -> None:
    _LIB_GENERATION[path] = _LIB_GENERATION.get(path, 0) + 1


def _hold_lock_across_fork() -> None:
    # No PKCS#11 call may be in flight while the process forks, or the child would inherit the
    # module's internal mutexes locked. The child releases the inherited hold (same thread id).
    os.register_at_fork(
        before=_LOCK.acquire, after_in_parent=_LOCK.release, after_in_child=_LOCK.release
    )


_hold_lock_across_fork()


@dataclass(frozen=True)
class TokenConfig:
    """Where the signing keys live: PKCS#11 module, token label, user PIN.

    ``softhsm2_conf``, if set, becomes ``SOFTHSM2_CONF`` before the module is first loaded.
    """

    module_path: str
    token_label: str
    user_pin: str = field(repr=False)
    softhsm2_conf: str | None = None


def _load_library(config: TokenConfig) -> Any:
    """Return the process's loaded module, re-initialised if this process is a fork. Locked."""
    path = config.module_path
    pid = os.getpid()
    lib = _LIBS.get(path)
    if lib is not None:
        wanted = config.softhsm2_conf
        if wanted is not None and _LIB_CONF[path] is not None and wanted != _LIB_CONF[path]:
            raise HSMError(
                f"the PKCS#11 module {path!r} is already loaded in this process with "
                f"SOFTHSM2_CONF={_LIB_CONF[path]!r}; use one SoftHSM2 configuration per process"
            )
        if _LIB_PID[path] != pid:
            _bump_generation(path)
            try:
                lib.reinitialize()
            except p11e.PKCS11Error as exc:
                raise _translate(exc, "re-initialise the PKCS#11 module after fork") from exc
            _LIB_PID[path] = pid
        return lib
    if not os.path.isfile(path):
        raise TokenNotFound(
            f"PKCS#11 module not found at {path!r} "
            "(for a development token install SoftHSM2: apt-get install softhsm2)"
        )
    if config.softhsm2_conf is not None:
        os.environ["SOFTHSM2_CONF"] = config.softhsm2_conf
    try:
        lib = pkcs11.lib(path)
    except p11e.PKCS11Error as exc:
        raise TokenNotFound(f"could not load the PKCS#11 module {path!r}: {exc}") from exc
    _LIBS[path] = lib
    _LIB_PID[path] = pid
    _bump_generation(path)
    _LIB_CONF[path] = os.environ.get("SOFTHSM2_CONF")
    return lib


def _get_token(lib: Any, label: str) -> Any:
    """Find the token. SoftHSM2's file store can answer CKR_GENERAL_ERROR while another process
    rewrites the token files, or while they are gone; ``KeyStore._open_session`` retries that,
    re-initialising the module between attempts."""
    return lib.get_token(token_label=label)


def _reinitialize(lib: Any) -> None:
    """C_Finalize then C_Initialize, each allowed to fail: a C_Initialize that failed while the
    token was gone leaves the module finalised, and a plain ``reinitialize()`` would then stop
    at C_Finalize (CKR_CRYPTOKI_NOT_INITIALIZED) and never initialise it again."""
    with contextlib.suppress(p11e.PKCS11Error):
        lib.finalize()
    with contextlib.suppress(p11e.PKCS11Error):
        lib.initialize()


def _translate(exc: Exception, action: str) -> HSMError:
    """Map a python-pkcs11 exception onto the ``hsm.errors`` family (no PINs, ever)."""
    if isinstance(exc, HSMError):
        return exc
    if isinstance(exc, _UNSUPPORTED):
        return MechanismUnsupported(f"the token cannot {action}: {type(exc).__name__}")
    if isinstance(exc, p11e.PinLocked):
        return HSMError(f"cannot {action}: the token's user PIN is locked")
    if isinstance(exc, _DOWN):
        return HSMUnavailable(f"cannot {action}: the token is unavailable ({type(exc).__name__})")
    return HSMError(f"cannot {action}: PKCS#11 error {type(exc).__name__}")


def _unwrap_octet_string(value: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the point; accept a bare point as well."""
    if len(value) >= 2 and value[0] == 0x04:
        if value[1] < 0x80 and len(value) == 2 + value[1]:
            return value[2:]
        if value[1] == 0x81 and len(value) >= 3 and len(value) == 3 + value[2]:
            return value[3:]
    return value


def _public_key_from_token(pub: Any, key_type: KeyType) -> Any:
    """Build a cryptography public key from the token's public-key object."""
    if key_type.is_rsa:
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(pub[Attribute.MODULUS], "big"),
        )
        return numbers.public_key()
    point = _unwrap_octet_string(bytes(pub[Attribute.EC_POINT]))
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PublicKey.from_public_bytes(point)
    return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[key_type], point)


def _key_type_of(pub: Any, label: str) -> KeyType:
    """Recognise which ``KeyType`` a token public key is."""
    p11_type = pub[Attribute.KEY_TYPE]
    if p11_type == P11KeyType.RSA:
        bits = len(pub[Attribute.MODULUS]) * 8
        for candidate in (KeyType.RSA_2048, KeyType.RSA_3072, KeyType.RSA_4096):
            if candidate.key_size == bits:
                return candidate
        raise MechanismUnsupported(f"the key {label!r} is RSA-{bits}, which agentca does not use")
    params = bytes(pub[Attribute.EC_PARAMS])
    if params == _ED25519_PRINTABLE:
        return KeyType.ED25519
    for candidate, der in _EC_PARAMS.items():
        if der == params:
            return candidate
    raise MechanismUnsupported(f"the key {label!r} uses a curve agentca does not use")


class KeyStore:
    """Generates and finds signing keys in one PKCS#11 token; hands out cryptography keys.

    Construction does no I/O. The module is loaded, the token found and a read-write user
    session opened on first use, and again after a fork.
    """

    def __init__(
        self, config: TokenConfig, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._monotonic = monotonic
        self._backoff = Backoff()
        self._last_error: HSMError | None = None
        self._ever_opened = False
        self._last_success: float | None = None
        self._guard: Callable[[], None] | None = None
        self._session: Any = None
        self._slot: Any = None
        self._pid: int | None = None
        self._generation = -1  # the module generation self._session was opened in
        self._handles: dict[str, Any] = {}  # label -> pkcs11 PrivateKey of the current session
        self._keys: dict[str, HsmPrivateKey] = {}  # label -> adapter (survives reopening)
        self._mechanisms: set[Mechanism] | None = None

    def __repr__(self) -> str:
        return f"<KeyStore token={self._config.token_label!r} module={self._config.module_path!r}>"

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def config(self) -> TokenConfig:
        """The token configuration this store was built with."""
        return self._config

    # ---- session handling (call with _LOCK held) -----------------------------------------------

    def _live_session(self) -> Any:
        pid = os.getpid()
        current = _LIB_GENERATION.get(self._config.module_path, 0)
        if self._session is not None and self._pid == pid and self._generation == current:
            return self._session
        # First use, a forked child (the inherited handle is meaningless here) or a lost token.
        self._session = None
        self._handles.clear()
        now = self._monotonic()
        if not self._backoff.allows(now):
            raise self._refusal(now)
        try:
            session = self._open_session()
        except HSMError as exc:
            self._note_failure(exc)
            raise self._refusal(self._monotonic()) from exc
        self._backoff.succeeded()
        self._last_error = None
        self._ever_opened = True
        self._session = session
        self._pid = pid
        self._generation = _LIB_GENERATION.get(self._config.module_path, 0)
        return session

    def _note_failure(self, exc: HSMError) -> None:
        """Remember why the token could not be used and when to try again."""
        self._drop_session()
        self._last_error = exc
        self._backoff.failed(self._monotonic())

    def _refusal(self, now: float) -> HSMError:
        """The fast answer while the store waits to retry: ``HSMUnavailable``, or, for a store
        that never opened a session (a wrong label, PIN or module path), the same error again."""
        last = self._last_error
        wait = self._backoff.wait(now)
        if last is not None and not isinstance(last, HSMUnavailable) and not self._ever_opened:
            return type(last)(str(last))
        reason = str(last) if last is not None else "the token is unavailable"
        return HSMUnavailable(
            f"the HSM is unavailable ({reason}); the next reconnection attempt is in {wait:.1f} s",
            retry_after=max(1, math.ceil(wait)),
        )

    def _open_session(self) -> Any:
        """Open and log in within a short time budget, retrying the states SoftHSM2's file store
        shows while another process rewrites the token or while its files are gone, and
        re-initialising the module between attempts so that it reads the token afresh."""
        budget = REOPEN_BUDGET if self._ever_opened else FIRST_OPEN_BUDGET
        deadline = self._monotonic() + budget
        attempt = 0
        while True:
            try:
                return self._open_session_once()
            except HSMError as exc:
                transient = isinstance(exc, TokenNotFound | HSMUnavailable) or (
                    "not been initialised" in str(exc)
                )
                pause = 0.02 * (attempt + 1) + secrets.randbelow(30) / 1000
                if (
                    isinstance(exc, PinIncorrect)
                    or not transient
                    or self._monotonic() + pause > deadline
                ):
                    if isinstance(exc, TokenNotFound) and self._ever_opened:
                        raise HSMUnavailable(str(exc)) from exc
                    raise
            attempt += 1
            time.sleep(pause)
            lib = _LIBS.get(self._config.module_path)
            if lib is not None:  # make SoftHSM2 read the token files afresh
                _bump_generation(self._config.module_path)
                _reinitialize(lib)
                _LIB_PID[self._config.module_path] = os.getpid()

    def _open_session_once(self) -> Any:
        cfg = self._config
        lib = _load_library(cfg)
        try:
            token = _get_token(lib, cfg.token_label)
        except p11e.NoSuchToken:
            raise TokenNotFound(
                f"no PKCS#11 token labelled {cfg.token_label!r} in module {cfg.module_path!r}"
            ) from None
        except p11e.MultipleTokensReturned:
            raise HSMError(
                f"several PKCS#11 tokens are labelled {cfg.token_label!r}; labels must be unique"
            ) from None
        except p11e.PKCS11Error as exc:  # the module or token is failing, or not initialised
            raise HSMUnavailable(
                f"cannot find the token {cfg.token_label!r}: PKCS#11 error {type(exc).__name__}"
            ) from exc
        self._slot = token.slot
        try:
            return token.open(rw=True, user_pin=cfg.user_pin)
        except p11e.UserAlreadyLoggedIn:
            # Login state is per process and per token: another session already logged in.
            pass
        except (p11e.PinIncorrect, p11e.PinLenRange, p11e.PinInvalid):
            raise PinIncorrect(f"the HSM PIN for token {cfg.token_label!r} is incorrect") from None
        except p11e.UserPinNotInitialized:
            raise HSMError(
                f"the user PIN of token {cfg.token_label!r} has not been initialised"
            ) from None
        except p11e.PKCS11Error as exc:
            raise _translate(exc, f"log in to the token {cfg.token_label!r}") from exc
        try:
            return token.open(rw=True)
        except p11e.PKCS11Error as exc:
            raise _translate(exc, f"open a session on token {cfg.token_label!r}") from exc

    def _drop_session(self) -> None:
        self._session = None
        self._handles.clear()

    def _run(self, action: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(session)`` under the lock; retry once on a fresh session if it went stale
        or the token failed. A second failure starts the backoff: ``HSMUnavailable``."""
        with _LOCK:
            for attempt in (1, 2):
                session = self._live_session()
                try:
                    result = fn(session)
                except _RECOVERABLE as exc:
                    self._drop_session()
                    if attempt == 2:
                        error = _translate(exc, action)
                        if isinstance(exc, _DOWN) or self._last_error is not None:
                            self._note_failure(error)
                        raise error from exc
                    continue
                except p11e.PKCS11Error as exc:
                    raise _translate(exc, action) from exc
                self._last_success = self._monotonic()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def set_guard(self, guard: Callable[[], None] | None) -> None:
        """Call ``guard()`` before every signature; it refuses by raising (the CA uses it to
        refuse signing while its clock is off, see ``ca.clockcheck``)."""
        self._guard = guard

    def status(self) -> HsmStatus:
        """A cheap readiness check: the session is open (reopening it if the backoff allows)
        and the token answers C_GetTokenInfo. Never waits for longer than one reopen attempt."""
        with _LOCK:
            age = (
                None
                if self._last_success is None
                else max(0.0, self._monotonic() - self._last_success)
            )
            try:
                self._live_session()
                self._slot.get_token()
            except _RECOVERABLE as exc:
                self._note_failure(_translate(exc, "query the token"))
            except p11e.PKCS11Error as exc:
                return HsmStatus(False, str(_translate(exc, "query the token")), 0.0, age)
            except HSMError as exc:
                return HsmStatus(False, str(exc), self._backoff.wait(self._monotonic()), age)
            else:
                return HsmStatus(True, f"token {self._config.token_label!r} answers", 0.0, age)
            last = self._last_error
            wait = self._backoff.wait(self._monotonic())
            return HsmStatus(False, str(last) if last else "the token is unavailable", wait, age)

    def call_with_session(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(session)`` with the live, logged-in python-pkcs11 session, under the lock.

        An escape hatch for tests and maintenance; do not keep the session beyond the call.
        """
        return self._run("run a PKCS#11 operation", fn)

    # ---- lookup -----------------------------------------------------------------------------

    def _find(self, session: Any, object_class: ObjectClass, label: str) -> Any | None:
        found = list(session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))
        if len(found) > 1:
            raise HSMError(f"several {object_class.name.lower()} objects are labelled {label!r}")
        return found[0] if found else None

    def _private_handle(self, session: Any, label: str) -> Any:
        handle = self._handles.get(label)
        if handle is None:
            handle = self._find(session, ObjectClass.PRIVATE_KEY, label)
            if handle is None:
                # SoftHSM2 shows an empty object list while its token files are away; the
                # token itself then fails C_GetTokenInfo, which says "unavailable", not
                # "no such key" (a worker that never loaded the key meets this first)
                self._slot.get_token()
                raise KeyNotFound(
                    f"no private key labelled {label!r} in token {self._config.token_label!r}"
                )
            self._handles[label] = handle
        return handle

    def _hsm_sign(self, label: str, mechanism: Mechanism, data: bytes, param: Any = None) -> bytes:
        """Sign ``data`` with the private key ``label`` inside the token."""

        if self._guard is not None:
            self._guard()

        def sign(session: Any) -> bytes:
            try:
                key = self._private_handle(session, label)
            except KeyNotFound:
                if label not in self._keys:
                    raise
                # a key this process already used is gone: the token is half back (SoftHSM2
                # shows an empty token while its files return), not the key deleted
                raise p11e.TokenNotPresent() from None
            signature: bytes = key.sign(data, mechanism=mechanism, mechanism_param=param)
            return signature

        started = time.perf_counter()
        ok = False
        try:
            signature = self._run(f"sign with key {label!r}", sign)
            ok = True
            return signature
        finally:
            observe_sign(time.perf_counter() - started, ok)

    def _adapter(self, label: str, key_type: KeyType, pub: Any) -> HsmPrivateKey:
        public = _public_key_from_token(pub, key_type)
        key: HsmPrivateKey
        if key_type.is_rsa:
            key = HsmRsaPrivateKey(self, label, key_type, public)
        elif key_type is KeyType.ED25519:
            key = HsmEd25519PrivateKey(self, label, key_type, public)
        else:
            key = HsmEcPrivateKey(self, label, key_type, public)
        self._keys[label] = key
        return key

    def get(self, label: str) -> HsmPrivateKey:
        """Return the key labelled ``label``; ``KeyNotFound`` if the token has none."""
        cached = self._keys.get(label)
        if cached is not None:
            return cached

        def load(session: Any) -> HsmPrivateKey:
            self._private_handle(session, label)
            pub = self._find(session, ObjectClass.PUBLIC_KEY, label)
            if pub is None:
                raise HSMError(f"the key {label!r} has no public key object on the token")
            return self._adapter(label, _key_type_of(pub, label), pub)

        return self._run(f"load key {label!r}", load)

    def exists(self, label: str) -> bool:
        """True if the token holds a private key labelled ``label``."""
        return self._run(
            f"look up key {label!r}",
            lambda s: self._find(s, ObjectClass.PRIVATE_KEY, label) is not None,
        )

    def labels(self) -> list[str]:
        """Labels of the private keys in the token, sorted."""

        def collect(session: Any) -> list[str]:
            objs = session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            return sorted({str(obj.label) for obj in objs})

        return self._run("list keys", collect)

    # ---- capabilities and generation ---------------------------------------------------------

    def _supports_locked(self, key_type: KeyType) -> bool:
        if self._mechanisms is None:
            self._mechanisms = set(self._slot.get_mechanisms())
        generate, sign = _NEEDS[key_type]
        if generate not in self._mechanisms or sign not in self._mechanisms:
            return False
        info = self._slot.get_mechanism_info(generate)
        if key_type is KeyType.ED25519:
            return True
        low, high = int(info.min_key_length), int(info.max_key_length)
        return low <= key_type.key_size <= high

    def supports(self, key_type: KeyType) -> bool:
        """True if the token can generate and sign with ``key_type``."""
        return self._run(
            f"query mechanisms for {key_type}", lambda _s: self._supports_locked(key_type)
        )

    def generate(self, label: str, key_type: KeyType) -> HsmPrivateKey:
        """Generate a non-extractable key pair named ``label`` inside the token.

        Both halves are token objects with the same label and a random CKA_ID; the private half
        is private, sensitive, non-extractable and can only sign. ``KeyExists`` if the label is
        taken, ``MechanismUnsupported`` if the token cannot make this key type.
        """

        def generate(session: Any) -> HsmPrivateKey:
            if self._find(session, ObjectClass.PRIVATE_KEY, label) is not None:
                raise KeyExists(
                    f"a key labelled {label!r} already exists in token {self._config.token_label!r}"
                )
            if not self._supports_locked(key_type):
                raise MechanismUnsupported(
                    f"token {self._config.token_label!r} cannot generate {key_type} keys"
                )
            private_template: dict[Attribute, Any] = {
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.SIGN: True,
                Attribute.DECRYPT: False,
                Attribute.UNWRAP: False,
                Attribute.DERIVE: False,
            }
            public_template: dict[Attribute, Any] = {
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.VERIFY: True,
                Attribute.ENCRYPT: False,
                Attribute.WRAP: False,
            }
            kwargs: dict[str, Any] = {
                "id": secrets.token_bytes(16),
                "label": label,
                "store": True,
                "capabilities": MechanismFlag.SIGN | MechanismFlag.VERIFY,
                "public_template": public_template,
                "private_template": private_template,
            }
            if key_type.is_rsa:
                pub, priv = session.generate_keypair(P11KeyType.RSA, key_type.key_size, **kwargs)
            else:
                public_template[Attribute.EC_PARAMS] = _EC_PARAMS[key_type]
                if key_type is KeyType.ED25519:
                    p11_type, mechanism = P11KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN
                else:
                    p11_type, mechanism = P11KeyType.EC, Mechanism.EC_KEY_PAIR_GEN
                pub, priv = session.generate_keypair(p11_type, mechanism=mechanism, **kwargs)
            self._handles[label] = priv
            return self._adapter(label, key_type, pub)

        return self._run(f"generate a {key_type} key", generate)

    def close(self) -> None:
        """Close this process's session (logging the token out). The store reopens on use."""
        with _LOCK:
            session, same_process = self._session, self._pid == os.getpid()
            self._drop_session()
            if session is not None and same_process:
                # It may already be closed, or logged out by another store on this token.
                with contextlib.suppress(p11e.PKCS11Error):
                    session.close()


if TYPE_CHECKING:
    from hsm.keymanager import KeyManager

    def _conforms(store: KeyStore) -> KeyManager:
        return store  # mypy checks that the PKCS#11 store implements the seam

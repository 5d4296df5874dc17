"""Initialise a SoftHSM2 token without putting PINs on a command line.

Run as ``python -m hsm._init_token`` with ``SOFTHSM2_CONF`` in the environment and a JSON object
``{"module", "label", "so_pin", "user_pin"}`` on stdin. If no initialised token carries the label,
it calls C_InitToken on the first free slot, logs in as SO and calls C_InitPIN, all through ctypes
so the parent's python-pkcs11 module stays untouched. Prints ``{"slot": n, "created": bool}``.
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

CK_ULONG = ctypes.c_ulong
CKR_OK = 0
CKF_TOKEN_INITIALIZED = 0x400
CKF_RW_SESSION = 0x2
CKF_SERIAL_SESSION = 0x4
CKU_SO = 0


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _TokenInfo(ctypes.Structure):
    _fields_ = [
        ("label", ctypes.c_char * 32),
        ("manufacturerID", ctypes.c_char * 32),
        ("model", ctypes.c_char * 16),
        ("serialNumber", ctypes.c_char * 16),
        ("flags", CK_ULONG),
        ("ulMaxSessionCount", CK_ULONG),
        ("ulSessionCount", CK_ULONG),
        ("ulMaxRwSessionCount", CK_ULONG),
        ("ulRwSessionCount", CK_ULONG),
        ("ulMaxPinLen", CK_ULONG),
        ("ulMinPinLen", CK_ULONG),
        ("ulTotalPublicMemory", CK_ULONG),
        ("ulFreePublicMemory", CK_ULONG),
        ("ulTotalPrivateMemory", CK_ULONG),
        ("ulFreePrivateMemory", CK_ULONG),
        ("hardwareVersion", _Version),
        ("firmwareVersion", _Version),
        ("utcTime", ctypes.c_char * 16),
    ]


class InitError(Exception):
    """A PKCS#11 call failed; the message names the call and the return value only."""


def _check(name: str, rv: int) -> None:
    if rv != CKR_OK:
        raise InitError(f"{name} failed with CKR 0x{rv:08x}")


def _padded_label(label: str) -> bytes:
    raw = label.encode("utf-8")
    if len(raw) > 32:
        raise InitError("the token label is longer than 32 bytes")
    return raw.ljust(32, b" ")


def init_token(module: str, label: str, so_pin: str, user_pin: str) -> dict[str, Any]:
    """Find or create the token ``label``; return its slot id and whether it was created."""
    p11 = ctypes.CDLL(module)
    _check("C_Initialize", p11.C_Initialize(None))
    try:
        count = CK_ULONG(0)
        _check("C_GetSlotList", p11.C_GetSlotList(ctypes.c_ubyte(1), None, ctypes.byref(count)))
        slots = (CK_ULONG * max(count.value, 1))()
        _check("C_GetSlotList", p11.C_GetSlotList(ctypes.c_ubyte(1), slots, ctypes.byref(count)))
        free: int | None = None
        want = _padded_label(label)
        for slot in list(slots)[: count.value]:
            info = _TokenInfo()
            _check("C_GetTokenInfo", p11.C_GetTokenInfo(CK_ULONG(slot), ctypes.byref(info)))
            if info.flags & CKF_TOKEN_INITIALIZED:
                if bytes(info.label).ljust(32, b" ") == want:
                    return {"slot": int(slot), "created": False}
            elif free is None:
                free = int(slot)
        if free is None:
            raise InitError("no free slot to initialise a token in")
        so = so_pin.encode("utf-8")
        user = user_pin.encode("utf-8")
        _check(
            "C_InitToken",
            p11.C_InitToken(CK_ULONG(free), so, CK_ULONG(len(so)), want),
        )
        session = CK_ULONG(0)
        _check(
            "C_OpenSession",
            p11.C_OpenSession(
                CK_ULONG(free),
                CK_ULONG(CKF_SERIAL_SESSION | CKF_RW_SESSION),
                None,
                None,
                ctypes.byref(session),
            ),
        )
        try:
            _check("C_Login", p11.C_Login(session, CK_ULONG(CKU_SO), so, CK_ULONG(len(so))))
            _check("C_InitPIN", p11.C_InitPIN(session, user, CK_ULONG(len(user))))
            _check("C_Logout", p11.C_Logout(session))
        finally:
            p11.C_CloseSession(session)
        return {"slot": free, "created": True}
    finally:
        p11.C_Finalize(None)


def main() -> int:
    """Read the request from stdin, print the result; exit 1 with a one-line error on failure."""
    try:
        request = json.loads(sys.stdin.read())
        result = init_token(
            str(request["module"]),
            str(request["label"]),
            str(request["so_pin"]),
            str(request["user_pin"]),
        )
    except (InitError, OSError, KeyError, ValueError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Certificate serial numbers: 159 bits of CSPRNG output, positive, at most 20 octets."""

from __future__ import annotations

import secrets

SERIAL_BITS = 159  # RFC 5280 4.1.2.2: positive, at most 20 octets; CA/B Forum: >= 64 random bits


def new_serial() -> int:
    """A fresh random serial (never zero; top bit clear so DER needs no sign octet)."""
    while True:
        value = secrets.randbits(SERIAL_BITS)
        if value >= 1 << 64:  # at least 64 significant random bits; retry is ~never taken
            return value


def serial_to_hex(serial: int) -> str:
    """The canonical text form we store and print: lowercase hex, no leading zeros."""
    if serial <= 0:
        raise ValueError("serial numbers are positive")
    return format(serial, "x")


def parse_serial(text: str) -> int:
    """Parse a serial given as hex (optionally ``0x``-prefixed or colon-separated)."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or len(cleaned) > 40 or any(c not in "0123456789abcdef" for c in cleaned):
        raise ValueError(f"'{text}' is not a hexadecimal serial number of at most 20 octets")
    value = int(cleaned, 16)
    if value <= 0:
        raise ValueError("serial numbers are positive")
    return value


_SEPARATORS = str.maketrans("", "", ": \t")


def parse_any_serial(text: str) -> int:
    """Parse a serial in any form an operator may paste.

    ``openssl x509 -serial`` output (``serial=0A1B...``, with or without the ``serial=``),
    upper or lower case, with or without leading zeros, octets separated by colons or spaces,
    ``0x``-prefixed. Raises ``ValueError`` for anything else.
    """
    cleaned = text.strip().lower().removeprefix("serial=").translate(_SEPARATORS)
    digits = cleaned.removeprefix("0x").lstrip("0") or cleaned.removeprefix("0x")
    if not digits or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"'{text}' is not a hexadecimal serial number")
    if len(digits) > 40:
        raise ValueError(f"'{text}' is longer than a serial number (at most 20 octets)")
    value = int(digits, 16)
    if value <= 0:
        raise ValueError("serial numbers are positive")
    return value

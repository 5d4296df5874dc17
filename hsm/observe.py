"""A hook on the key seam: who wants to know how long each HSM signature took.

The key store calls ``observe_sign`` after every PKCS#11 signature; a service that exports
metrics sets the observer once per process (``ca.metrics.observe_sign``). Without one it costs
one global read. The hook never raises into a signature.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

SignObserver = Callable[[float, bool], None]  # (seconds, succeeded)

_observer: SignObserver | None = None


def set_sign_observer(observer: SignObserver | None) -> None:
    """Send every later signature's duration to ``observer`` (None: to nobody)."""
    global _observer
    _observer = observer


def observe_sign(seconds: float, ok: bool) -> None:
    """Report one signature that took ``seconds`` (``ok`` False when it failed)."""
    observer = _observer
    if observer is not None:
        with contextlib.suppress(Exception):  # a metrics fault must never fail a signature
            observer(seconds, ok)

"""The authorised model inventory: static, or fetched from the CA (``GET /v1/models``).

``CAInventory`` reads the active models with a read-only API token and keeps them in memory;
a background thread refreshes them every ``refresh_seconds``, so the request path is a set
look-up. Refreshes are conditional (``If-None-Match`` with the last ``ETag``): while nothing
changed the CA answers a bodiless 304, which its access log leaves out. If the CA cannot be
reached for longer than ``max_stale_seconds`` the inventory fails closed (every model is
refused) until a refresh succeeds.

Each entry also says whether a verified OpenSSF Model Signing signature admitted it and from
which producer (:meth:`CAInventory.entry`, decision 0052). ``signed_environments`` makes the
gateway refuse, for those environments, an entry the CA admitted unsigned (defence in depth:
the CA already refuses unsigned entries there when its own setting says so).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from wire.refresh import Refresher

log = logging.getLogger("agentca.gateway.inventory")


class Inventory(Protocol):
    def authorised(self, model_digest: str, environment: str) -> bool:
        """True if the model digest (lowercase hex) may run in ``environment``."""
        ...


class StaticInventory:
    """A fixed set of authorised digests, optionally per environment.

    Entries are hex digests (any environment) or ``(digest, environment)`` pairs.
    """

    def __init__(self, entries: Iterable[str | tuple[str, str]]) -> None:
        self._any: set[str] = set()
        self._pairs: set[tuple[str, str]] = set()
        for entry in entries:
            if isinstance(entry, str):
                self._any.add(entry.lower().removeprefix("sha256:"))
            else:
                self._pairs.add((entry[0].lower().removeprefix("sha256:"), entry[1]))

    def authorised(self, model_digest: str, environment: str) -> bool:
        return model_digest in self._any or (model_digest, environment) in self._pairs


@dataclass(frozen=True)
class InventoryEntry:
    """One active model of the CA's inventory as the gateway sees it."""

    digest: str
    environment: str
    digest_scheme: str = "agentca-manifest-v1"
    #: the producer whose verified OMS signature admitted the model, None if unsigned
    signed_by: str | None = None
    #: ``key`` or ``certificate``; the key's SHA-256 or the signing certificate's subject
    signature_method: str | None = None
    signer: str | None = None

    @property
    def signed(self) -> bool:
        return self.signed_by is not None


def _entry(m: dict[str, object]) -> InventoryEntry:
    def opt(name: str) -> str | None:  # only a non-empty string names something
        value = m.get(name)
        return value if isinstance(value, str) and value else None

    return InventoryEntry(
        digest=str(m["digest"]).lower(),
        environment=str(m["environment"]),
        digest_scheme=str(m.get("digest_scheme", "agentca-manifest-v1")),
        signed_by=opt("signed_by"),
        signature_method=opt("signature_method"),
        signer=opt("signer"),
    )


def _requires(patterns: Iterable[str], environment: str) -> bool:
    """``environment`` matches a name or ``prefix*`` of ``patterns``, ignoring case (the CA
    refuses two environments that differ only in case: a setting's case must not matter)."""
    env = environment.casefold()
    return any(
        env.startswith(p[:-1].casefold()) if p.endswith("*") else env == p.casefold()
        for p in patterns
    )


class InventoryUnavailable(Exception):
    """The CA's inventory could not be read."""


class CAInventory:
    """Active models from the CA API (``GET /v1/models?status=active``), cached in memory."""

    def __init__(
        self,
        ca_url: str,
        token: str,
        refresh_seconds: float = 5.0,
        max_stale_seconds: float = 300.0,
        match_environment: bool = True,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
        signed_environments: Iterable[str] = (),
    ) -> None:
        self.url = ca_url.rstrip("/") + "/v1/models?status=active"
        #: environments (names or ``prefix*``) where only signed entries are authorised
        self.signed_environments = tuple(signed_environments)
        self._entries: dict[tuple[str, str], InventoryEntry] = {}
        self._token = token
        self.refresh_seconds = refresh_seconds
        self.max_stale_seconds = max_stale_seconds
        self.match_environment = match_environment
        self.timeout = timeout
        self.clock = clock
        self.background = background
        self._pairs: frozenset[tuple[str, str]] = frozenset()
        self._digests: frozenset[str] = frozenset()
        self._loaded_at: float | None = None
        self._etag: str | None = None
        self._lock = threading.Lock()
        self._started = False
        self._refresher = Refresher(
            "agentca-gateway-inventory",
            self.load,
            lambda: self.refresh_seconds,
            first_wait=True,
            expected=(InventoryUnavailable,),
            on_error=lambda exc: log.warning("%s", exc),
        )

    def load(self) -> None:
        """Fetch the inventory now (raises :class:`InventoryUnavailable`)."""
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        req = urllib.request.Request(self.url, headers=headers)
        started = self.clock()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                models = json.loads(resp.read())
                etag = resp.headers.get("ETag")
            entries = {
                (e.digest, e.environment): e
                for e in (_entry(m) for m in models if m.get("status", "active") == "active")
            }
            pairs = frozenset(entries)
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and self._etag is not None:
                with self._lock:  # unchanged since the last answer: it is fresh again
                    self._loaded_at = started
                return
            raise InventoryUnavailable(f"cannot read {self.url}: {exc}") from None
        except (
            urllib.error.URLError,
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            RecursionError,  # a deeply nested answer: json.loads gives up
        ) as exc:
            raise InventoryUnavailable(f"cannot read {self.url}: {exc}") from None
        with self._lock:
            self._entries = entries
            self._etag = etag
            self._pairs = pairs
            self._digests = frozenset(d for d, _ in pairs)
            self._loaded_at = started

    def _ensure(self) -> None:
        if self._loaded_at is None:
            with self._lock:
                first = self._loaded_at is None
            if first:
                self.load()
        if self.background and not self._started:
            with self._lock:
                start, self._started = not self._started, True
            if start:
                self._refresher.start()
        elif not self.background and self._age() >= self.refresh_seconds:
            try:
                self.load()
            except InventoryUnavailable as exc:
                log.warning("%s", exc)

    def _age(self) -> float:
        return float("inf") if self._loaded_at is None else self.clock() - self._loaded_at

    def stop(self) -> None:
        """Stop the background refresh (it is not started again)."""
        self._refresher.stop()

    def authorised(self, model_digest: str, environment: str) -> bool:
        try:
            self._ensure()
        except InventoryUnavailable as exc:
            log.warning("%s", exc)
            return False
        if self._age() > self.max_stale_seconds:
            return False
        if _requires(self.signed_environments, environment):
            found = self._entries.get((model_digest, environment))
            return found is not None and found.signed
        if self.match_environment:
            return (model_digest, environment) in self._pairs
        return model_digest in self._digests

    def entry(self, model_digest: str, environment: str) -> InventoryEntry | None:
        """The active entry for ``model_digest`` in ``environment`` (signed or not), or None."""
        try:
            self._ensure()
        except InventoryUnavailable as exc:
            log.warning("%s", exc)
            return None
        if self._age() > self.max_stale_seconds:
            return None
        return self._entries.get((model_digest.lower(), environment))

    def entries(self) -> list[InventoryEntry]:
        """Every active entry of the last answer (the gateway's inventory view)."""
        return sorted(self._entries.values(), key=lambda e: (e.environment, e.digest))

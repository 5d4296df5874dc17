"""Ships a gateway's action log to the CA's action ledger (issue 18, decision 0055).

    shipper = ActionShipper(actions, "https://ca.example", "/etc/agentca/gateway-token")
    shipper.start()            # a daemon thread; shipper.stop() at shutdown

Each round sends the records from the shipping cursor on (``ActionLog.shipped``), consecutive,
at most :data:`wire.actions.MAX_BATCH`, as ``POST {ca_url}/v1/actions`` with the body of
:meth:`ActionBatch.to_json <wire.actions.ActionBatch.to_json>` (the records' own leaf bytes,
spliced in unchanged) and the newest checkpoint covering no more than the batch's last record,
authenticated with ``Authorization: Bearer`` and the API token in ``token_file`` (role
``gateway``, named like the gateway ID; re-read every round, so it can be replaced).

The CA's answers, and what the shipper does:

200 ``{"accepted", "duplicates", "next_seq"}``
    The CA holds every record before ``next_seq``: the cursor moves there (atomically on disk,
    so a restart resumes from it). Re-sending what the CA has is harmless (``duplicates``).
409 (a record under a seq the CA holds with other bytes)
    Shipping stops for good (:attr:`ActionShipper.state` ``"conflict"``) with an error log
    line: nothing is overwritten, an operator must look. The spool then fills, and at its
    bound the gateway refuses requests (``action-log-unavailable``).
422 with ``next_seq`` (the batch starts past what the CA has: a gap)
    Resume from ``next_seq``: the local log keeps every record, so the gap is filled.
422 ``.../checkpoint-invalid`` (the CA refuses the carried checkpoint, e.g. signed by a key it
    does not have registered for the gateway; it stored nothing)
    Logged at ERROR, and the same records are sent again at once without a checkpoint;
    checkpoints of that ``key_id`` are not sent again by this shipper (an operator registers
    the right key). Records keep flowing; only their CA-side checkpoint is missing.
    Any other 422 is logged and retried with backoff.
413
    The batch is halved (down to one record) and sent again.
401 / 403
    Logged; retried at the longest backoff (a token may be fixed without a restart).
429, 5xx, no connection
    Retried with capped exponential backoff and full jitter (``Retry-After`` honoured up to
    the cap).

Nothing is lost (the cursor moves only on the CA's word, after the CA stored the records) and
nothing is duplicated in the ledger (the CA stores ``(gateway, seq)`` once; a re-sent record
with the same bytes counts as a duplicate).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.action_log import ActionLog
from wire.actions import MAX_BATCH, VERSION, GatewayCheckpoint
from wire.canonical import canonical

log = logging.getLogger("agentca.gateway.actions.shipper")

MAX_BATCH_BYTES: Final = 1 << 20
"""About the most record bytes one batch carries (the CA's body limit must allow it)."""
CHECKPOINT_INVALID: Final = "checkpoint-invalid"
"""The last path segment of the CA's problem ``type`` refusing a carried checkpoint."""


class ShippingStopped(Exception):
    """The CA answered in a way that must not be retried blindly (409, a bad ``next_seq``)."""


@dataclass(frozen=True)
class Shipped:
    """The result of one :meth:`ActionShipper.ship_once` round."""

    status: int | None  # the CA's HTTP status (None: no answer, or nothing to send)
    sent: int  # records in the batch
    next_seq: int  # the cursor after the round
    retry: bool = False  # the round failed and should be retried after a backoff


def batch_body(gateway: str, records: list[bytes], checkpoint: GatewayCheckpoint | None) -> bytes:
    """The JSON of ``ActionBatch(gateway, records, checkpoint).to_json()``, with the records'
    leaf bytes spliced in as they are on disk (canonical JSON is valid JSON)."""
    head = canonical({"v": VERSION, "gateway": gateway})[:-1]
    body = head + b',"records":[' + b",".join(records) + b"]"
    if checkpoint is not None:
        body += b',"checkpoint":' + canonical(checkpoint.to_json())
    return body + b"}"


class ActionShipper:
    """Ships ``actions`` to the CA at ``ca_url`` (see the module docstring)."""

    def __init__(
        self,
        actions: ActionLog,
        ca_url: str,
        token_file: Path | str,
        *,
        batch: int = MAX_BATCH,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        interval: float = 1.0,
        timeout: float = 10.0,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """``interval``: seconds between rounds when everything is shipped; ``timeout``: per
        HTTP request; ``backoff_min``/``backoff_max``: the retry delay bounds."""
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be 1..{MAX_BATCH}")
        self.actions = actions
        self.url = ca_url.rstrip("/") + "/v1/actions"
        self.token_file = Path(token_file)
        self.batch = batch
        self.max_batch_bytes = max_batch_bytes
        self.interval = interval
        self.timeout = timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.rng = rng
        self.state = "idle"
        """``idle``, ``shipping``, ``retrying``, ``unauthorised``, ``conflict`` or ``stopped``."""
        self.last_error: str | None = None
        self.accepted = 0
        self.duplicates = 0
        self.checkpoints_refused = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._retry_after: float | None = None
        self.refused_keys: set[str] = set()
        """Key IDs whose checkpoints the CA refused (``checkpoint-invalid``)."""

    # -- one round

    def ship_once(self) -> Shipped:
        """Send one batch from the cursor (if anything is unshipped) and act on the answer.
        Raises :class:`ShippingStopped` on an answer that stops shipping."""
        actions = self.actions
        first = actions.shipped
        if first >= actions.size:
            return Shipped(None, 0, first)
        records = actions.read(first, self.batch, self.max_batch_bytes)
        checkpoint = actions.latest_checkpoint(first + len(records))
        if checkpoint is not None and checkpoint.key_id in self.refused_keys:
            checkpoint = None
        status, answer, retry_after = self._post(batch_body(actions.gateway, records, checkpoint))
        if status == 422 and checkpoint is not None and _problem(answer) == CHECKPOINT_INVALID:
            self.refused_keys.add(checkpoint.key_id)
            self.checkpoints_refused += 1
            log.error(
                "the CA refused gateway %s's checkpoint of %d records (key_id %s): %s. Sending "
                "the records without checkpoints of that key; register the gateway's current "
                "public key at the CA",
                actions.gateway,
                checkpoint.tree_size,
                checkpoint.key_id,
                _detail(answer),
            )
            status, answer, retry_after = self._post(batch_body(actions.gateway, records, None))
        if status is None:
            return Shipped(None, len(records), first, retry=True)
        if status == 200:
            next_seq = self._next_seq(answer, status)
            self.accepted += _int(answer, "accepted")
            self.duplicates += _int(answer, "duplicates")
            if next_seq < first:
                log.warning(
                    "the CA holds only records before %d of gateway %s, not %d: re-sending "
                    "from there",
                    next_seq,
                    actions.gateway,
                    first,
                )
            actions.mark_shipped(next_seq)
            self._failures = 0
            self.last_error = None
            stalled = next_seq <= first  # accepted nothing of it: do not spin
            return Shipped(status, len(records), next_seq, retry=stalled)
        if status == 409:
            self.last_error = f"409 from the CA: {_detail(answer)}"
            raise ShippingStopped(
                f"the CA holds a record of gateway {actions.gateway} (seq {first}.."
                f"{first + len(records) - 1}) with other bytes: {_detail(answer)}. Shipping "
                "stopped; the local log is unchanged; an operator must compare the two"
            )
        if status == 422 and answer is not None and "next_seq" in answer:
            next_seq = self._next_seq(answer, status)
            log.warning("the CA has a gap before record %d of gateway %s: resuming from %d",
                        first, actions.gateway, next_seq)  # fmt: skip
            actions.mark_shipped(next_seq)
            return Shipped(status, len(records), next_seq)
        if status == 413 and len(records) > 1:
            self.batch = max(1, len(records) // 2)
            log.warning("the CA refused a batch as too large: %d records per batch now", self.batch)
            return Shipped(status, len(records), first)
        self.last_error = f"{status} from the CA: {_detail(answer)}"
        if status in (401, 403):
            self.state = "unauthorised"
            log.error("the CA refused the gateway's credential (%s): %s; check %s",
                      status, _detail(answer), self.token_file)  # fmt: skip
            self._failures = max(self._failures, 32)  # the longest backoff
        elif status == 429 or status >= 500:
            log.warning("the CA answered %d; retrying", status)
        else:
            log.error("the CA answered %d to an action batch: %s", status, _detail(answer))
        self._retry_after = retry_after
        return Shipped(status, len(records), first, retry=True)

    def _next_seq(self, answer: dict[str, Any] | None, status: int) -> int:
        value = None if answer is None else answer.get("next_seq")
        size = self.actions.size
        if type(value) is not int or not 0 <= value <= size:
            self.last_error = f"{status} with next_seq {value!r} (the log holds {size} records)"
            raise ShippingStopped(
                f"the CA answered {status} with next_seq {value!r}, but gateway "
                f"{self.actions.gateway}'s log holds {size} records: is this the right CA, "
                "gateway ID and log directory? Shipping stopped"
            )
        return value

    def _post(self, body: bytes) -> tuple[int | None, dict[str, Any] | None, float | None]:
        try:
            token = self.token_file.read_text().strip()
        except OSError as exc:
            self.last_error = f"cannot read the token file {self.token_file}: {exc}"
            log.error("%s", self.last_error)
            return None, None, None
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, application/problem+json",
                "Authorization": f"Bearer {token}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _json(response.read()), None
        except urllib.error.HTTPError as exc:
            with exc:
                data = exc.read()
            return exc.code, _json(data), _retry_after(exc.headers.get("Retry-After"))
        except (OSError, ValueError) as exc:  # refused, reset, timed out, DNS
            self.last_error = f"the CA at {self.url} is unreachable: {exc}"
            log.warning("%s", self.last_error)
            return None, None, None

    # -- the thread

    def start(self) -> ActionShipper:
        """Ship in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="agentca-action-shipper",
                                            daemon=True)  # fmt: skip
            self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop shipping (a request in flight finishes or times out first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.state != "conflict":
            self.state = "stopped"

    def delay(self) -> float:
        """The next retry delay: full jitter over a capped exponential backoff."""
        cap = min(self.backoff_max, self.backoff_min * 2.0 ** min(self._failures, 32))
        retry_after = self._retry_after
        if retry_after is not None:
            return min(self.backoff_max, max(retry_after, self.backoff_min))
        return self.backoff_min + self.rng() * max(0.0, cap - self.backoff_min)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._retry_after = None
            try:
                result = self.ship_once()
            except ShippingStopped as exc:
                self.state = "conflict"
                log.critical("action shipping stopped: %s", exc)
                return
            except Exception:  # never die silently: log, back off, go on
                log.exception("action shipping failed")
                result = Shipped(None, 0, self.actions.shipped, retry=True)
            if result.retry:
                if self.state != "unauthorised":
                    self.state = "retrying"
                self._failures += 1
                self._stop.wait(self.delay())
            elif result.sent == 0:
                self.state = "idle"
                self._stop.wait(self.interval)
            else:
                self.state = "shipping"


def _json(data: bytes) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError, RecursionError):
        value = json.loads(data)
        if isinstance(value, dict):
            return value
    return None


def _problem(answer: dict[str, Any] | None) -> str | None:
    """The last segment of an RFC 9457 problem's ``type`` (``.../checkpoint-invalid``)."""
    kind = None if answer is None else answer.get("type")
    return kind.rstrip("/").rsplit("/", 1)[-1] if isinstance(kind, str) else None


def _int(answer: dict[str, Any] | None, name: str) -> int:
    value = None if answer is None else answer.get(name)
    return value if type(value) is int else 0


def _detail(answer: dict[str, Any] | None) -> str:
    if answer is None:
        return "(no JSON body)"
    return str(answer.get("detail") or answer.get("title") or answer)[:300]


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _clock() -> float:  # pragma: no cover - kept for symmetry with the log's clock
    return time.monotonic()

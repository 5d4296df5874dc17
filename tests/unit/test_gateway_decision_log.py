"""The decision log: queued on the request path, written by one thread, never dropped."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chain import AgentIdentity
from gateway.decision_log import DecisionLog
from gateway.httpsig import RequestView
from gateway.problems import Check, Denied
from gateway.verifier import Decision, _LogLine


class Collect(logging.Handler):
    def __init__(self, block: threading.Event | None = None) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []
        self.block = block

    def emit(self, record: logging.LogRecord) -> None:
        if self.block is not None:
            self.block.wait(5)
        self.lines.append((record.getMessage(), threading.current_thread().name))


class Line:
    formatted = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __str__(self) -> str:
        Line.formatted += 1
        return f"line {self.n}"


def _log(name: str, handler: logging.Handler, capacity: int = 1000) -> DecisionLog:
    logger = logging.getLogger(f"test.decisions.{name}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return DecisionLog(logger, capacity=capacity)


def test_lines_are_written_in_order_by_the_writer_thread() -> None:
    out = Collect()
    log = _log("order", out)
    for n in range(500):
        log.append(Line(n))
    assert log.flush(5)
    assert [m for m, _ in out.lines] == [f"line {n}" for n in range(500)]
    assert {t for _, t in out.lines} == {"agentca-decision-log"}


def test_formatting_happens_off_the_request_path() -> None:
    out = Collect(block=threading.Event())
    log = _log("offpath", out)
    before = Line.formatted
    log.append(Line(1))  # the writer takes it and blocks in the handler
    log.append(Line(2))
    time.sleep(0.05)
    assert Line.formatted - before <= 1  # line 2 still waits, unformatted, in the queue
    assert out.block is not None
    out.block.set()
    assert log.flush(5) and [m for m, _ in out.lines] == ["line 1", "line 2"]


def test_a_full_queue_writes_in_the_caller_and_loses_nothing() -> None:
    gate = threading.Event()
    out = Collect(block=gate)
    log = _log("full", out, capacity=3)
    for n in range(10):
        if n == 9:
            threading.Timer(0.2, gate.set).start()
        log.append(Line(n))
    assert log.flush(5)
    assert sorted(int(m.split()[1]) for m, _ in out.lines) == list(range(10))
    callers = [m for m, t in out.lines if t == threading.current_thread().name]
    assert callers  # the overflow was written by the requests themselves


def test_a_failing_handler_does_not_stop_the_writer(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Collect):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "line 0":
                raise RuntimeError("disk gone")
            super().emit(record)

    out = Broken()
    log = _log("broken", out)
    out.handleError = lambda record: (_ for _ in ()).throw(RuntimeError("raised"))  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="agentca.gateway"):
        log.append(Line(0))
        log.append(Line(1))
        assert log.flush(5)
    assert [m for m, _ in out.lines] == ["line 1"]


def _stream_log(
    name: str, fmt: str | None, propagate_to: logging.Logger | None = None
) -> tuple[DecisionLog, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    if fmt is not None:
        handler.setFormatter(logging.Formatter(fmt))
    if propagate_to is not None:
        parent = propagate_to
        parent.handlers[:] = [handler]
        parent.setLevel(logging.INFO)
        parent.propagate = False
        logger = logging.getLogger(f"{parent.name}.child")
        logger.handlers[:] = []
        logger.setLevel(logging.INFO)
        logger.propagate = True
        return DecisionLog(logger), out
    return _log(name, handler), out


@pytest.mark.parametrize("fmt", [None, "%(message)s", "%(levelname)s %(message)s"])
def test_batched_writes_give_the_bytes_logging_gives(fmt: str | None) -> None:
    log, out = _stream_log(f"bytes{fmt!r}", fmt)
    for n in range(300):
        log.append(Line(n))
    assert log.flush(5)
    prefix = "INFO " if fmt and "levelname" in fmt else ""
    assert out.getvalue() == "".join(f"{prefix}line {n}\n" for n in range(300))


def test_the_batched_path_only_for_plain_message_only_handlers() -> None:
    from gateway.decision_log import _plain_handlers

    plain, _ = _stream_log("plain", None)
    assert _plain_handlers(plain.logger) is not None
    stamped, _ = _stream_log("stamped", "%(asctime)s %(message)s")
    assert _plain_handlers(stamped.logger) is None
    filtered, _ = _stream_log("filtered", None)
    filtered.logger.addFilter(lambda record: True)
    assert _plain_handlers(filtered.logger) is None
    collected = _log("collect", Collect())
    assert _plain_handlers(collected.logger) is None  # a handler of its own class
    child, out = _stream_log("", None, propagate_to=logging.getLogger("test.decisions.parent"))
    handlers = _plain_handlers(child.logger)
    assert handlers is not None and len(handlers) == 1  # the parent's, reached by propagation
    child.append(Line(7))
    assert child.flush(5) and out.getvalue() == "line 7\n"


def test_flush_with_nothing_queued_returns_at_once() -> None:
    log = _log("empty", Collect())
    started = time.perf_counter()
    assert log.flush(5) and time.perf_counter() - started < 0.5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_starts_its_own_writer() -> None:
    out = Collect()
    log = _log("fork", out)
    log.append(Line(0))
    assert log.flush(5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's writer thread does not exist here
        try:
            log.append(Line(1))
            ok = log.flush(2) and out.lines[-1][0] == "line 1"
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


# -- the line's text: what json.dumps gave before the formatter was built from parts ---------
def _reference(line: Any) -> str:
    d = line.decision
    ident = d.identity
    entry: dict[str, object] = {
        "ts": round(line.ts, 6),
        "decision": "allow" if d.allowed else "deny",
        "check": None if d.denial is None else d.denial.check.value,
        "http_status": line.http_status,
        "method": line.method,
        "path": line.path,
        "scope": d.scope,
        "agent": None if ident is None else ident.name,
        "spiffe_id": None if ident is None else ident.spiffe_id,
        "serial": None if ident is None else ident.serial,
        "officer": None if ident is None else ident.officer,
        "profile": d.profile,
        "status_source": d.status_source,
        "tls_client_cert": d.extra.get("tls_client_cert"),
        "nonce": d.nonce,
        "detail": None if d.denial is None else d.denial.detail,
        "elapsed_us": round(d.elapsed_us, 1),
    }
    return json.dumps(entry, separators=(",", ":"), sort_keys=False)


_text = st.text(max_size=40)
_maybe = st.none() | _text


@settings(max_examples=300, deadline=None)
@given(
    allowed=st.booleans(),
    check=st.sampled_from(list(Check)),
    denied=st.booleans(),
    detail=_text,
    status=st.none() | st.integers(100, 599),
    method=_text,
    path=_text,
    scope=_maybe,
    profile=_maybe,
    source=_maybe,
    tls=_maybe,
    nonce=_maybe,
    names=st.none() | st.tuples(_text, _text, _text, _text),
    ts=st.floats(0, 4e9),
    elapsed=st.floats(0, 1e7),
)
def test_the_line_is_what_json_dumps_gives(
    allowed: bool,
    check: Check,
    denied: bool,
    detail: str,
    status: int | None,
    method: str,
    path: str,
    scope: str | None,
    profile: str | None,
    source: str | None,
    tls: str | None,
    nonce: str | None,
    names: tuple[str, str, str, str] | None,
    ts: float,
    elapsed: float,
) -> None:
    ident = None
    if names is not None:
        ident = AgentIdentity(
            names[0], names[1], (), names[3], "prod", None, names[2], "fp", "t", "m", "p", None, "x"
        )
    d = Decision(
        allowed,
        identity=ident,
        denial=Denied(check, detail) if denied else None,
        status_source=source,
        scope=scope,
        nonce=nonce,
        elapsed_us=elapsed,
        profile=profile,
    )
    if tls is not None:
        d.extra["tls_client_cert"] = tls
    line = _LogLine(d, RequestView(method, path, "", {}), ts, status)
    assert str(line) == _reference(line)
    json.loads(str(line))

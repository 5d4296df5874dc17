"""Strict JSON bodies of the CA API: bounded nesting measured in one linear pass, then the
typed models, whose refusals are problems naming the member."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ca.api.bodies import json_depth, parse_json_object
from ca.api.schemas import (
    REQUEST_MODELS,
    BulkRevocation,
    EnrollJson,
    IssueJson,
    NewApiToken,
    NewModel,
    NewRegistration,
    RegistrationUpdate,
    RenewJson,
    RequestBody,
    Retirement,
    Scope,
)
from ca.api.validation import parse
from ca.errors import CAError, ErrorCode


@contextmanager
def at_most(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging) when the block runs longer than ``seconds``."""

    def _expired(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"{}", 1),
        (b'{"a": [1, {"b": "[[[["}]}', 3),
        (b'{"a": "\\"]]]]"}', 1),
        (b'{"a": "\\\\", "b": [[]]}', 3),
        (b"[" * 100 + b"]" * 100, 100),
        (b'"unterminated [[[', 0),
    ],
)
def test_depth(raw: bytes, depth: int) -> None:
    assert json_depth(raw) == depth


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": "' + b'\\"' * 32_000,  # unterminated string of escaped quotes (64 KB)
        b'{"a": "' + b"\\\\" * 32_000,
        b'"' * 65_000,
        b"[" * 65_000,
    ],
)
def test_hostile_bodies_are_refused_in_linear_time(raw: bytes) -> None:
    """Review finding: cutting strings out with re.sub was quadratic on escaped quotes
    (64 KB, the body limit, cost ~17 s of CPU per unauthenticated /v1/renew)."""
    with at_most(2), pytest.raises(CAError) as caught:
        parse_json_object(raw)
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_strict_parsing() -> None:
    assert parse_json_object(b'{"a": [1, 2]}') == {"a": [1, 2]}
    for raw in (b'{"a": 1, "a": 2}', b'{"a": NaN}', b"[1]", b'{"a": "\xff"}', b"\xff\xfe{\x00}"):
        with pytest.raises(CAError):
            parse_json_object(raw)


# -- typed models after the strict parser (ca.api.schemas, ca.api.validation) -----------------
DIGEST = "ab" * 32


def _refusal(model: type[RequestBody], raw: bytes) -> CAError:
    with pytest.raises(CAError) as caught:
        parse(model, parse_json_object(raw))
    return caught.value


@pytest.mark.parametrize(
    ("model", "raw", "slug", "needle"),
    [
        (Scope, b"{}", "bad-request", "'name' is required"),
        (Scope, b'{"name": null}', "bad-request", "'name' is required"),
        (Scope, b'{"name": 5}', "bad-request", "'name' must be of type str"),
        (Scope, b'{"name": "x", "description": ["y"]}', "bad-request", "'description'"),
        (
            RenewJson,
            b'{"certificate": "c", "csr": "r", "created": "1", "proof": "p"}',
            "bad-request",
            "'created' must be an integer",
        ),
        (
            RenewJson,
            b'{"certificate": "c", "csr": "r", "created": true, "proof": "p"}',
            "bad-request",
            "'created' must be an integer",
        ),
        (
            RenewJson,
            b'{"certificate": "c", "csr": "r", "created": 1.0, "proof": "p"}',
            "bad-request",
            "'created' must be an integer",
        ),
        (
            EnrollJson,
            b'{"csr": "x", "scopes": ["a", 1]}',
            "bad-request",
            "'scopes' must be a list of strings",
        ),
        (
            EnrollJson,
            b'{"csr": "x", "scopes": "a"}',
            "bad-request",
            "'scopes' must be of type list",
        ),
        (
            EnrollJson,
            b'{"csr": "x", "validity_seconds": 0}',
            "invalid-validity",
            "'validity_seconds' must be a positive number of seconds",
        ),
        (
            EnrollJson,
            b'{"csr": "x", "validity_seconds": 400000000}',
            "invalid-validity",
            "'validity_seconds'",
        ),
        (Retirement, b'{"revoke": 1}', "bad-request", "'revoke' must be of type bool"),
        (Retirement, b'{"revoke": "yes"}', "bad-request", "'revoke' must be of type bool"),
        (
            RegistrationUpdate,
            b'{"status": "gone"}',
            "bad-request",
            "'status' must be 'active' or 'disabled'",
        ),
        (
            NewModel,
            b'{"digest": "abc", "model_type": "m", "environment": "e"}',
            "invalid-digest",
            "64 hex digits",
        ),
        (NewApiToken, b'{"name": "n", "role": "root"}', "bad-request", "'role' must be"),
        (IssueJson, b'{"csr": "x"}', "bad-request", "'agent' is required"),
    ],
)
def test_models_refuse_with_the_member_named(
    model: type[RequestBody], raw: bytes, slug: str, needle: str
) -> None:
    err = _refusal(model, raw)
    assert err.code.slug == slug, err.detail
    assert needle in err.detail, err.detail
    assert "pydantic" not in err.detail and "Input should" not in err.detail


def test_models_keep_null_as_absent() -> None:
    """``null`` means absent, as the hand-written checks did."""
    scope = parse(Scope, parse_json_object(b'{"name": "s", "description": null}'))
    assert scope == Scope(name="s")
    retire = parse(Retirement, {})
    assert retire.revoke is False and retire.reason is None and retire.environment is None
    reg = parse(
        NewRegistration,
        {
            "name": "a",
            "officer": "o",
            "environment": "prod",
            "model_type": "m",
            "scopes": [],
            "model_digests": [f"sha256:{DIGEST}"],
            "prompt_digests": [DIGEST.upper()],
            "max_validity_seconds": 3600,
        },
    )
    assert reg.config_digests is None and reg.max_validity_seconds == 3600


@pytest.mark.parametrize(
    ("model", "data", "member"),
    [
        # a misspelt criterion must not widen a bulk revocation to every certificate of "a"
        (BulkRevocation, {"agent": "a", "model_digst": DIGEST}, "model_digst"),
        # nor a retirement to every environment
        (Retirement, {"environmnet": "staging", "revoke": True}, "environmnet"),
        # nor answer 200 to a disable that disabled nothing
        (RegistrationUpdate, {"satus": "disabled"}, "satus"),
        # nor hand out the registration's scopes instead of the narrower ones asked for
        (EnrollJson, {"csr": "x", "scope": ["read"]}, "scope"),
        (IssueJson, {"csr": "x", "agent": "a", "outside_polcy": True}, "outside_polcy"),
        (Scope, {"name": "s", "extra": [1]}, "extra"),
        (Scope, {"nmae": "s"}, "nmae"),  # rather than "'name' is required"
    ],
)
def test_unknown_members_are_refused(
    model: type[RequestBody], data: dict[str, object], member: str
) -> None:
    with pytest.raises(CAError) as caught:
        parse(model, data)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    assert caught.value.detail == f"unknown member '{member}'"


def test_every_request_model_refuses_unknown_members() -> None:
    for model in REQUEST_MODELS:
        assert model.model_config.get("extra") == "forbid", model.__name__
        assert model.model_json_schema().get("additionalProperties") is False, model.__name__


def test_an_unknown_member_is_named_briefly() -> None:
    with pytest.raises(CAError) as caught:
        parse(Scope, {"name": "s", "x" * 10_000: 1})
    assert len(caught.value.detail) < 100


def test_the_strict_parser_still_runs_first() -> None:
    """Depth, duplicate keys and NaN are refused before any model sees the body."""
    for raw, needle in (
        (b'{"name": "a", "name": "b"}', "twice"),
        (b'{"name": ' + b"[" * 40 + b"]" * 40 + b"}", "deeper"),
        (b'{"name": NaN}', "NaN"),
    ):
        with pytest.raises(CAError) as caught:
            parse(Scope, parse_json_object(raw))
        assert needle in caught.value.detail


@pytest.mark.parametrize("raw", ["\u0661\u0660", " 10", "10 ", "+10", "1_0", "1e3", "-5", "10\n"])
def test_query_seconds_take_ascii_digits_only(raw: str) -> None:
    """``int()`` would read Arabic-Indic digits, blanks, signs and underscores as a number."""
    from flask import Flask

    from ca.api.validation import query_seconds

    context = Flask(__name__).test_request_context(query_string={"validity_seconds": raw})
    with context, pytest.raises(CAError) as caught:
        query_seconds("validity_seconds")
    assert caught.value.code is ErrorCode.BAD_REQUEST


def test_query_seconds_in_range() -> None:
    from datetime import timedelta

    from flask import Flask

    from ca.api.validation import query_seconds

    with Flask(__name__).test_request_context(query_string={"validity_seconds": "3600"}):
        assert query_seconds("validity_seconds") == timedelta(hours=1)
    context = Flask(__name__).test_request_context(query_string={"validity_seconds": "0"})
    with context, pytest.raises(CAError) as caught:
        query_seconds("validity_seconds")
    assert caught.value.code is ErrorCode.INVALID_VALIDITY


@pytest.mark.parametrize(
    "raw",
    [
        b'{"certificate": "\\ud800", "csr": "r", "created": 1, "proof": "AA=="}',
        b'{"certificate": "c", "csr": "r", "created": 1, "proof": "AA==", "scopes": ["\\udfff"]}',
        b'{"\\ud83d": 1, "certificate": "c", "csr": "r", "created": 1, "proof": "AA=="}',
    ],
)
def test_a_lone_surrogate_is_bad_request_not_internal(
    raw: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """JSON lets ``\\ud800`` through; it cannot be encoded, so the route's ``.encode()`` (or
    the database) failed with a 500 and a traceback, unauthenticated on /v1/renew."""
    from ca.api.app import create_app
    from ca.config import Settings

    def no_runtime() -> Any:
        raise AssertionError("the body must be refused before the runtime is needed")

    app = create_app(Settings(data_dir=tmp_path), runtime_factory=no_runtime)
    answer = app.test_client().post("/v1/renew", data=raw, content_type="application/json")
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    assert answer.get_json()["type"].endswith("/bad-request")
    assert "Traceback" not in caplog.text


def test_non_ascii_text_is_still_accepted() -> None:
    from flask import Flask

    from ca.api.bodies import json_body

    raw = '{"name": "s", "description": "café 😀"}'.encode()
    with Flask(__name__).test_request_context(data=raw, content_type="application/json"):
        assert json_body()["description"] == "café 😀"

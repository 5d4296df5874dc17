"""The web console in a real browser (issue 19): headless Debian Chromium, driven by Selenium
through the system chromedriver, against the real CA API (``agentca serve``), OCSP responder,
SoftHSM2 token and PostgreSQL of ``examples.scenario``. Screenshots go to docs/console/."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from agent import Agent, RuntimeProvenance, generate_key, model_digest, prompt_digest_file
from examples.scenario import AGENT, ENVIRONMENT, MODEL_TYPE, SCOPES
from tests.browser.conftest import (
    IDLE_SECONDS,
    WAIT,
    ConsoleCA,
    shot,
    sign_in,
    text_of,
    until,
    wait_for,
)
from tests.browser.plain_http import http_call
from tests.integration.action_support import GatewayKey
from tests.integration.action_support import batch as action_batch
from tests.integration.action_support import record as action_record

pytestmark = pytest.mark.integration
NEW_AGENT = "ConsoleAgent-01"


def text(driver: WebDriver, css: str) -> str:
    """The text of the first element matching ``css`` (waiting for it: after a click the
    next page may still be loading)."""
    return text_of(driver, css).strip()


def csrf_of(driver: WebDriver) -> str:
    """The session's CSRF token, as the page's sign-out form carries it."""
    field = driver.find_element(By.CSS_SELECTOR, "header form input[name=csrf_token]")
    return str(field.get_attribute("value"))


def session_cookie(driver: WebDriver) -> dict[str, str]:
    c = driver.get_cookie("agentca_console")
    assert c is not None
    return {"agentca_console": c["value"]}


def first_serial(ca: ConsoleCA, driver: WebDriver, agent: str) -> str:
    driver.get(f"{ca.url}/certificates?agent={agent}&status=issued")
    link = driver.find_element(By.CSS_SELECTOR, "#certificates tbody td a")
    return str(link.text)


# -- sign-in, roles, cookies ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("role", "sees", "hidden"),
    [
        ("operator", ["Ledger", "API tokens"], []),
        ("auditor", ["Ledger", "Checkpoints"], ["API tokens"]),
        ("read-only", ["Certificates"], ["Ledger", "API tokens"]),
    ],
)
def test_each_role_signs_in_and_sees_its_navigation(
    console_ca: ConsoleCA, b: WebDriver, role: str, sees: list[str], hidden: list[str]
) -> None:
    sign_in(b, console_ca, role)
    assert text(b, "#whoami").endswith(role)
    nav = text(b, "header nav")
    assert all(s in nav for s in sees), nav
    assert not any(h in nav for h in hidden), nav
    assert int(text(b, "#count-live")) >= 1
    cookie = b.get_cookie("agentca_console")
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console" and cookie["secure"] is False  # plain HTTP here
    if role == "operator":
        shot(b, "dashboard")


def test_set_cookie_attributes_and_security_headers(console_ca: ConsoleCA) -> None:
    """On the wire: HttpOnly, SameSite=Strict, Path=/console; no framing, no caching, a CSP."""
    base = console_ca.scenario.ca_url
    form = http_call(base, "GET", "/console/sign-in")
    assert form.status == 200
    assert form.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in form.headers["Content-Security-Policy"]
    assert "default-src 'self'" in form.headers["Content-Security-Policy"]
    assert form.headers["Cache-Control"] == "no-store"
    pre = re.search(r'name="signin_token" value="([^"]+)"', form.body)
    assert pre is not None
    answer = http_call(
        base,
        "POST",
        "/console/sign-in",
        {"signin_token": pre.group(1), "token": console_ca.tokens["auditor"], "next": "/console/"},
        {"agentca_console_signin": pre.group(1)},
    )
    assert answer.status == 303 and answer.headers["Location"] == "/console/"
    session = [h for h in answer.headers.get_all("Set-Cookie") or [] if "agentca_console=" in h]
    assert len(session) == 1
    attrs = {a.strip().lower() for a in session[0].split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= attrs
    assert "secure" not in attrs


def test_a_bad_token_gets_an_error_page_not_a_traceback(
    console_ca: ConsoleCA, b: WebDriver
) -> None:
    b.get(console_ca.url + "/sign-in")
    b.find_element(By.ID, "token").send_keys("aca_api_not-a-token")
    b.find_element(By.ID, "sign-in").click()
    assert "unknown API token" in str(wait_for(b, "#error").text)  # type: ignore[attr-defined]
    assert "Traceback" not in b.page_source
    b.get(console_ca.url + "/certificates?serial=zz-not-hex")
    assert b.current_url.startswith(console_ca.url + "/sign-in")  # signed out: sign in first
    sign_in(b, console_ca, "read-only")
    b.get(console_ca.url + "/certificates?serial=zz-not-hex")
    assert text(b, "#error") and "Traceback" not in b.page_source
    b.get(console_ca.url + "/no-such-page")
    assert "no such console page" in text(b, "#error")


def test_next_is_only_ever_a_local_console_path(console_ca: ConsoleCA) -> None:
    base = console_ca.scenario.ca_url
    for target in (
        "https://evil.example/",
        "//evil.example/console",
        "/v1/api-tokens",
        "/\\evil",
        "/console/../v1/api-tokens",
        "/console//evil.example",
    ):
        form = http_call(base, "GET", "/console/sign-in")
        pre = re.search(r'name="signin_token" value="([^"]+)"', form.body)
        assert pre is not None
        answer = http_call(
            base,
            "POST",
            "/console/sign-in",
            {"signin_token": pre.group(1), "token": console_ca.tokens["auditor"], "next": target},
            {"agentca_console_signin": pre.group(1)},
        )
        assert answer.status == 303 and answer.headers["Location"] == "/console/", target


# -- the operator journey ---------------------------------------------------------------------
def test_operator_registers_enrolls_sees_and_revokes(console_ca: ConsoleCA, b: WebDriver) -> None:
    s = console_ca.scenario
    sign_in(b, console_ca, "operator", "/agents")
    b.find_element(By.ID, "register-agent").click()
    wait_for(b, "#name").send_keys(NEW_AGENT)  # type: ignore[attr-defined]
    b.find_element(By.ID, "officer").send_keys("risk-officer@enterprise.io")
    b.find_element(By.ID, "environment").send_keys(ENVIRONMENT)
    b.find_element(By.ID, "model_type").send_keys(MODEL_TYPE)
    b.find_element(By.ID, "scopes").send_keys(" ".join(SCOPES))
    b.find_element(By.ID, "model_digests").send_keys(model_digest(s.model_dir).hex())
    b.find_element(By.ID, "prompt_digests").send_keys(prompt_digest_file(s.prompt_file).hex())
    b.find_element(By.ID, "max_validity_hours").send_keys("12")
    shot(b, "register-agent")
    b.find_element(By.ID, "register").click()
    until(b, lambda d: d.current_url.endswith(f"/agents/{NEW_AGENT}"))
    assert "risk-officer@enterprise.io" in b.page_source

    b.find_element(By.ID, "create-enrollment-token").click()
    token = str(wait_for(b, "#secret").text).strip()  # type: ignore[attr-defined]
    assert token
    runtime = RuntimeProvenance(MODEL_TYPE, s.model_dir, prompt_path=s.prompt_file)
    agent = Agent(NEW_AGENT, generate_key("ec-p256"), runtime, s.ca_url)
    agent.enroll(token)  # through the real CSR endpoint
    serial = agent.credential.serial_hex

    b.get(f"{console_ca.url}/agents/{NEW_AGENT}")
    assert serial in b.page_source and "used" in text(b, "main")
    shot(b, "agent")
    b.get(f"{console_ca.url}/certificates?agent={NEW_AGENT}")
    b.find_element(By.LINK_TEXT, serial).click()
    assert wait_for(b, "#extensions")
    assert "issued" in text(b, "#status")
    assert model_digest(s.model_dir).hex() in text(b, "#extensions")
    assert "risk-officer@enterprise.io" in text(b, "#extensions")
    b.find_element(By.ID, "ask-ocsp").click()
    assert wait_for(b, "#ocsp .st") and text(b, "#ocsp").startswith("good from")
    shot(b, "certificate")

    b.find_element(By.ID, "revoke").click()
    Select(wait_for(b, "#reason")).select_by_value("keyCompromise")  # type: ignore[arg-type]
    b.find_element(By.ID, "confirm").click()
    shot(b, "revoke")
    b.find_element(By.ID, "do-revoke").click()
    until(b, lambda d: "revoked" in text(d, "#status"))
    assert "keyCompromise" in text(b, "#status")
    assert not b.find_elements(By.ID, "revoke")

    deadline = time.monotonic() + WAIT  # the real responder says so, to the console...
    b.get(b.current_url.split("?")[0] + "?ocsp=1")
    while not text(b, "#ocsp").startswith("revoked") and time.monotonic() < deadline:
        time.sleep(0.5)
        b.refresh()
    assert text(b, "#ocsp").startswith("revoked from " + s.ocsp_url)
    assert agent.refresh_staple().status == "revoked"  # ...and to the agent SDK


def test_operator_holds_and_releases(console_ca: ConsoleCA, b: WebDriver) -> None:
    sign_in(b, console_ca, "operator")
    serial = first_serial(console_ca, b, AGENT)
    b.find_element(By.LINK_TEXT, serial).click()
    wait_for(b, "#hold").click()  # type: ignore[attr-defined]
    wait_for(b, "#confirm").click()  # type: ignore[attr-defined]
    b.find_element(By.ID, "do-revoke").click()
    until(b, lambda d: "on hold" in text(d, "#status"))
    b.find_element(By.CSS_SELECTOR, "input[name=confirm]").click()
    b.find_element(By.ID, "release").click()
    until(b, lambda d: "issued" in text(d, "#status"))


def test_the_dashboard_lists_open_drift_alerts(console_ca: ConsoleCA, b: WebDriver) -> None:
    s = console_ca.scenario
    sign_in(b, console_ca, "operator")
    serial = first_serial(console_ca, b, AGENT)  # the scenario agent's live certificate (before
    # the bulk and retirement tests below revoke it)
    s.cli("revoke", serial, "--reason", "certificateHold")
    state = Path(s.env["AGENTCA_DATA_DIR"]) / "drift" / "alerts.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    alert = {
        "id": "0123456789abcdef",
        "agent": AGENT,
        "environment": ENVIRONMENT,
        "raised_at": "2026-12-07T09:00:00Z",
        "mode": "hold",
        "evidence": {},
        "held": [serial],
        "status": "open",
    }
    state.write_text(json.dumps({"alerts": [alert]}))
    try:
        b.get(console_ca.url + "/")
        assert text(b, "#drift-open") == "1" and text(b, "#drift-on-hold") == "1"
        b.find_element(By.CSS_SELECTOR, "#drift-alerts td.agent a").click()
        until(b, lambda d: d.current_url.endswith(f"/agents/{AGENT}"))
    finally:
        state.unlink()
        s.cli("release", serial)


def test_operator_creates_and_revokes_an_api_token(console_ca: ConsoleCA, b: WebDriver) -> None:
    sign_in(b, console_ca, "operator", "/api-tokens")
    b.find_element(By.ID, "tname").send_keys("console-made")
    Select(b.find_element(By.ID, "trole")).select_by_value("auditor")
    b.find_element(By.ID, "create-api-token").click()
    secret = str(wait_for(b, "#secret").text).strip()  # type: ignore[attr-defined]
    assert secret.startswith("aca_api_")
    assert http_call(console_ca.scenario.ca_url, "GET", "/console/api-tokens").status == 303
    b.get(console_ca.url + "/api-tokens")
    shot(b, "api-tokens")
    b.find_element(By.ID, "revoke-console-made").click()
    until(b, lambda d: not d.find_elements(By.ID, "revoke-console-made"))
    assert "revoked" in text(b, "main")


# -- the auditor journey ----------------------------------------------------------------------
def test_auditor_filters_proves_verifies_and_exports(
    console_ca: ConsoleCA, b: WebDriver, downloads: Path
) -> None:
    s = console_ca.scenario
    s.cli("ledger", "checkpoint")  # operators sign checkpoints; auditors read them
    sign_in(b, console_ca, "auditor", "/ledger")
    b.find_element(By.NAME, "event").send_keys("console.signed_in")
    b.find_element(By.ID, "filter").click()
    until(b, lambda d: "event=console.signed_in" in d.current_url)
    events = {e.text for e in b.find_elements(By.CSS_SELECTOR, "#ledger td.event")}
    assert events == {"console.signed_in"}
    shot(b, "ledger")

    b.get(console_ca.url + "/ledger?event=certificate.revoked")
    actors = {e.text for e in b.find_elements(By.CSS_SELECTOR, "#ledger tbody tr td:nth-child(3)")}
    assert "console:ops" in actors  # the operator journey's revocation, by its console user

    b.get(console_ca.url + "/ledger?event=agent.registered")
    b.find_element(By.CSS_SELECTOR, "#ledger tbody td a").click()
    wait_for(b, "#show-proof").click()  # type: ignore[attr-defined]
    assert text(b, "#proof-result").startswith("Included")
    shot(b, "proof")

    b.get(console_ca.url + "/ledger/checkpoints")
    assert "valid" in text(b, "#checkpoints")
    shot(b, "checkpoints")

    b.get(console_ca.url + "/ledger")
    b.find_element(By.ID, "verify").click()
    assert text(b, "#verify-result").startswith("OK")
    shot(b, "verify")

    for old in downloads.glob("*"):
        old.unlink()
    b.get(console_ca.url + "/ledger")
    b.find_element(By.ID, "export").click()
    target = downloads / "agentca-ledger.jsonl"
    deadline = time.monotonic() + WAIT
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target.exists(), list(downloads.iterdir())
    out = s.cli("ledger", "verify", str(target), "--trust", str(s.root_pem))
    assert out.startswith("OK"), out


def test_an_auditor_cannot_act(console_ca: ConsoleCA, b: WebDriver) -> None:
    sign_in(b, console_ca, "auditor")
    b.get(console_ca.url + "/api-tokens")
    assert "may not GET" in text(b, "#error")
    b.get(console_ca.url + "/ledger/checkpoints")
    assert not b.find_elements(By.ID, "sign-checkpoint")


# -- read-only, CSRF, SameSite, expiry --------------------------------------------------------
def test_read_only_sees_no_action_controls_and_a_post_anyway_is_403(
    console_ca: ConsoleCA, b: WebDriver
) -> None:
    sign_in(b, console_ca, "read-only")
    serial = first_serial(console_ca, b, AGENT)
    for path in ("/", "/agents", f"/agents/{AGENT}", "/certificates", f"/certificates/{serial}"):
        b.get(console_ca.url + path)
        forms = b.find_elements(By.CSS_SELECTOR, "main form[method=post]")
        assert forms == [], path
        assert not b.find_elements(By.CSS_SELECTOR, "#revoke, #hold, #register-agent"), path
    shot(b, "read-only-certificate")
    b.get(console_ca.url + "/ledger")
    assert "may not GET" in text(b, "#error")
    answer = http_call(
        console_ca.scenario.ca_url,
        "POST",
        f"/console/certificates/{serial}/revoke",
        {"csrf_token": csrf_of(b), "confirm": "yes", "reason": "keyCompromise"},
        session_cookie(b),
    )
    assert answer.status == 403 and "may not POST" in answer.body
    b.get(f"{console_ca.url}/certificates/{serial}")
    assert "issued" in text(b, "#status")


def test_a_post_without_the_csrf_token_is_refused(console_ca: ConsoleCA, b: WebDriver) -> None:
    sign_in(b, console_ca, "operator")
    serial = first_serial(console_ca, b, AGENT)
    base, cookie = console_ca.scenario.ca_url, session_cookie(b)
    path = f"/console/certificates/{serial}/revoke"
    for form in ({"confirm": "yes"}, {"confirm": "yes", "csrf_token": "x" * 43}):
        answer = http_call(base, "POST", path, form, cookie)
        assert answer.status == 403 and "CSRF" in answer.body
    assert http_call(base, "POST", "/console/sign-out", {}, cookie).status == 403
    b.get(f"{console_ca.url}/certificates/{serial}")  # still signed in, still issued
    assert "issued" in text(b, "#status")
    no_pre = http_call(base, "POST", "/console/sign-in", {"token": console_ca.tokens["operator"]})
    assert no_pre.status == 403  # login CSRF: the sign-in form's own token is required
    form = {"confirm": "yes", "csrf_token": csrf_of(b), "reason": "keyCompromise"}
    for site in ("cross-site", "same-site"):  # what the browser says of the form's origin
        answer = http_call(base, "POST", path, form, cookie, {"Sec-Fetch-Site": site})
        assert answer.status == 403 and "another site" in answer.body


@pytest.fixture
def other_site() -> Iterator[tuple[str, dict[str, bytes]]]:
    """Another site (``localhost``, where the console is on ``127.0.0.1``) serving the page
    put in the yielded dictionary under ``"html"``."""
    page: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page["html"]
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}", page
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_another_site_cannot_use_the_session(
    console_ca: ConsoleCA, b: WebDriver, other_site: tuple[str, dict[str, bytes]]
) -> None:
    """SameSite=Strict: a form on another site posting to the console arrives without the
    session cookie, so it is refused as signed out (not even the CSRF check is reached)."""
    url, page = other_site
    sign_in(b, console_ca, "operator")
    serial = first_serial(console_ca, b, AGENT)
    page["html"] = (
        f'<form method="post" action="{console_ca.url}/certificates/{serial}/revoke">'
        '<input name="confirm" value="yes"><input name="csrf_token" value="guess">'
        '<button id="go" type="submit">go</button></form>'
    ).encode()
    b.get(url + "/")
    b.find_element(By.ID, "go").click()
    assert "session has ended" in str(wait_for(b, "#error").text)  # type: ignore[attr-defined]
    b.get(f"{console_ca.url}/certificates/{serial}")
    assert "issued" in text(b, "#status") and b.find_elements(By.ID, "whoami")


def test_an_idle_session_redirects_to_sign_in(console_ca: ConsoleCA, b: WebDriver) -> None:
    sign_in(b, console_ca, "auditor", "/ledger")
    time.sleep(IDLE_SECONDS + 1)
    b.get(console_ca.url + "/ledger?event=console.signed_in")
    until(b, lambda d: "/console/sign-in" in d.current_url)
    assert "ended=idle-timeout" in b.current_url
    assert "inactivity" in text(b, "#notice")
    shot(b, "sign-in")
    b.find_element(By.ID, "token").send_keys(console_ca.tokens["auditor"])
    b.find_element(By.ID, "sign-in").click()  # back where the user was
    until(b, lambda d: "/console/ledger?event=console.signed_in" in d.current_url)


def test_revoking_the_api_token_ends_its_sessions(console_ca: ConsoleCA, b: WebDriver) -> None:
    s = console_ca.scenario
    console_ca.tokens["short"] = s.cli("apitoken", "create", "short-lived", "--role", "auditor")
    sign_in(b, console_ca, "short")
    s.cli("apitoken", "revoke", "short-lived")
    b.get(console_ca.url + "/certificates")
    until(b, lambda d: "ended=token-revoked" in d.current_url)
    assert "revoked" in text(b, "#notice")


def test_sign_out_ends_the_session(console_ca: ConsoleCA, b: WebDriver) -> None:
    sign_in(b, console_ca, "read-only")
    cookie = session_cookie(b)
    b.find_element(By.ID, "sign-out").click()
    until(b, lambda d: "ended=signed-out" in d.current_url)
    again = http_call(console_ca.scenario.ca_url, "GET", "/console/", cookies=cookie)
    assert again.status == 303 and "/console/sign-in" in again.headers["Location"]


# -- many at once (these run last: the retirement stops the scenario's model) -----------------
def _enroll(ca: ConsoleCA, name: str) -> str:
    s = ca.scenario
    runtime = RuntimeProvenance(MODEL_TYPE, s.model_dir, prompt_path=s.prompt_file)
    agent = Agent(name, generate_key("ec-p256"), runtime, s.ca_url)
    agent.enroll(s.cli("token", "create", name))
    return agent.credential.serial_hex


def _preview(ca: ConsoleCA, b: WebDriver, officer: str, reason: str) -> None:
    b.get(ca.url + "/revocations")
    b.find_element(By.ID, "b-officer").send_keys(officer)
    Select(b.find_element(By.ID, "b-reason")).select_by_value(reason)
    b.find_element(By.ID, "preview").click()


def test_bulk_revocation_previews_and_wants_the_count_typed(
    console_ca: ConsoleCA, b: WebDriver
) -> None:
    serials = {_enroll(console_ca, NEW_AGENT) for _ in range(2)}
    sign_in(b, console_ca, "operator")
    _preview(console_ca, b, "risk-officer@enterprise.io", "affiliationChanged")
    assert text(b, "#preview-count").startswith("2 live certificates")
    assert serials <= set(re.findall(r"[0-9a-f]{30,}", text(b, "main table")))
    shot(b, "bulk-revoke")
    b.find_element(By.ID, "confirm_count").send_keys("3")
    b.find_element(By.ID, "do-bulk").click()
    assert "2 certificates match now" in text(b, "#error")  # nothing revoked
    _preview(console_ca, b, "risk-officer@enterprise.io", "affiliationChanged")
    wait_for(b, "#confirm_count").send_keys("2")  # type: ignore[attr-defined]
    b.find_element(By.ID, "do-bulk").click()
    assert text(b, "#done").startswith("revoked 2 certificates (affiliationChanged)")
    for serial in serials:
        b.get(f"{console_ca.url}/certificates/{serial}")
        assert "affiliationChanged" in text(b, "#status")


def test_retiring_a_model_shows_the_count_and_wants_its_type_typed(
    console_ca: ConsoleCA, b: WebDriver
) -> None:
    serial = _enroll(console_ca, AGENT)
    sign_in(b, console_ca, "operator", "/models")
    b.find_element(By.CSS_SELECTOR, "a.retire").click()
    live = int(text(b, "#retire-count"))
    form_url = b.current_url
    assert live >= 1
    b.find_element(By.ID, "retire-revoke").click()
    b.find_element(By.ID, "confirm_model_type").send_keys("gpt-something-else")
    b.find_element(By.ID, "do-retire").click()
    assert "type the model type" in text(b, "#error")
    b.get(form_url)
    b.find_element(By.ID, "retire-revoke").click()
    wait_for(b, "#confirm_model_type").send_keys(MODEL_TYPE)  # type: ignore[attr-defined]
    shot(b, "retire-model")
    b.find_element(By.ID, "do-retire").click()
    assert text(b, "#done").startswith(f"Retired {MODEL_TYPE}")
    assert f"revoked {live} certificate" in text(b, "#done")
    b.get(f"{console_ca.url}/certificates/{serial}")
    assert "privilegeWithdrawn" in text(b, "#status")
    b.get(console_ca.url + "/models")
    assert "retired" in text(b, "main table") and not b.find_elements(By.CSS_SELECTOR, "a.retire")


def test_reflected_input_is_escaped(console_ca: ConsoleCA, b: WebDriver) -> None:
    """Jinja autoescaping: what a link puts in a search field comes back as text."""
    sign_in(b, console_ca, "operator")
    probe = '"><script>document.title="owned"</script>'
    answer = http_call(
        console_ca.scenario.ca_url,
        "GET",
        "/console/certificates?agent=" + urllib.parse.quote(probe),
        cookies=session_cookie(b),
    )
    assert answer.status == 200
    assert "<script>" not in answer.body and "&lt;script&gt;" in answer.body
    b.get(console_ca.url + "/certificates?agent=" + urllib.parse.quote(probe))
    assert b.title != "owned" and b.find_element(By.NAME, "agent").get_attribute("value") == probe


# -- the action ledger, an agent's decisions, drift alerts, verification progress -------------
GATEWAY = "gw-browser"
HOSTILE = '<img src=x onerror="document.title=1">\u202etxt.exe'


@pytest.fixture(scope="module")
def action_records(console_ca: ConsoleCA, tmp_path_factory: pytest.TempPathFactory) -> int:
    """30 decisions about the scenario agent (every fifth a denial) and one with hostile
    strings, shipped by a real gateway registration over ``POST /v1/actions``; then a signed
    action checkpoint. Returns the hostile record's seq."""
    s = console_ca.scenario
    key = GatewayKey()
    pem = tmp_path_factory.mktemp("gateway") / "gateway.pem"
    pem.write_bytes(key.pem())
    s.cli("gateway", "add", GATEWAY, "--public-key", str(pem))
    token = s.cli("apitoken", "create", GATEWAY, "--role", "gateway")
    recs = [action_record(GATEWAY, i, agent=AGENT) for i in range(30)]
    recs.append(action_record(GATEWAY, 30, agent=AGENT, detail=HOSTILE, route="/v1/" + HOSTILE))
    request = urllib.request.Request(
        s.ca_url + "/v1/actions",
        data=json.dumps(action_batch(GATEWAY, recs)).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as answer:
        assert json.load(answer)["accepted"] == 31
    s.cli("ledger", "checkpoint", "--actions")
    return 30  # the only gateway of this CA: its records are the action ledger's 0..30


def test_auditor_filters_the_action_ledger_proves_and_exports(
    console_ca: ConsoleCA, b: WebDriver, downloads: Path, action_records: int
) -> None:
    s = console_ca.scenario
    sign_in(b, console_ca, "auditor", "/actions")
    Select(b.find_element(By.NAME, "outcome")).select_by_value("deny")
    b.find_element(By.NAME, "agent").send_keys(AGENT)
    b.find_element(By.ID, "filter").click()
    until(b, lambda d: "outcome=deny" in d.current_url)
    outcomes = {e.text for e in b.find_elements(By.CSS_SELECTOR, "#actions td.outcome")}
    assert outcomes == {"deny"}
    assert len(b.find_elements(By.CSS_SELECTOR, "#actions tbody tr")) == 6  # 4, 9, ..., 29
    shot(b, "actions")
    b.find_element(By.CSS_SELECTOR, "#actions tbody td a").click()
    wait_for(b, "#show-proof").click()  # type: ignore[attr-defined]
    assert text(b, "#proof-result").startswith("Included")
    shot(b, "action")

    for old in downloads.glob("*"):
        old.unlink()
    b.get(console_ca.url + f"/actions?agent={AGENT}&outcome=deny")
    b.find_element(By.ID, "export").click()
    target = downloads / "agentca-actions.jsonl"
    deadline = time.monotonic() + WAIT
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert target.exists(), list(downloads.iterdir())
    out = s.cli("ledger", "verify", str(target), "--trust", str(s.root_pem))
    assert out.startswith("OK"), out
    assert len(target.read_text().splitlines()) == 1 + 6


def test_a_hostile_record_is_shown_as_text(
    console_ca: ConsoleCA, b: WebDriver, action_records: int
) -> None:
    sign_in(b, console_ca, "auditor", f"/actions/{action_records}")
    main = text(b, "main")
    assert "<img src=x" in main and "\\u202etxt.exe" in main  # markup as text, bidi spelled out
    assert b.title != "1" and not b.find_elements(By.CSS_SELECTOR, "main img")


def test_the_agent_page_shows_recent_decisions(
    console_ca: ConsoleCA, b: WebDriver, action_records: int
) -> None:
    sign_in(b, console_ca, "operator", f"/agents/{AGENT}")
    rows = b.find_elements(By.CSS_SELECTOR, "#decisions tbody tr")
    assert len(rows) == 20
    assert rows[0].find_element(By.CSS_SELECTOR, "a").text == str(action_records)  # newest first
    b.find_element(By.ID, "agent-actions").click()
    until(b, lambda d: f"agent={AGENT}" in d.current_url)
    assert len(b.find_elements(By.CSS_SELECTOR, "#actions tbody tr")) == 31
    sign_in(b, console_ca, "read-only", f"/agents/{AGENT}")
    assert not b.find_elements(By.ID, "decisions")  # the action ledger is the auditors'
    b.get(console_ca.url + "/actions")
    assert "may not GET" in text(b, "#error")


def test_verification_shows_progress_then_the_verdict(
    console_ca: ConsoleCA, b: WebDriver, action_records: int
) -> None:
    sign_in(b, console_ca, "auditor", "/actions")
    b.find_element(By.ID, "verify-actions").click()
    until(b, lambda d: "/console/ledger/verify/" in d.current_url)
    job = b.current_url
    assert text(b, "#verify-result").startswith("OK")  # after the page's own refreshes
    assert "action ledger" in text(b, "#verify-summary")
    b.delete_all_cookies()
    sign_in(b, console_ca, "auditor")  # another session: the job is not its
    b.get(job)
    assert "no such verification" in text(b, "#error")

"""Browser-test fixtures: the real CA API and OCSP responder (``examples.scenario``, a real
SoftHSM2 token and PostgreSQL), and headless Debian Chromium driven by Selenium through the
system chromedriver (no browser or driver downloads: Selenium Manager is switched off)."""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples.scenario import Scenario

REPO = Path(__file__).resolve().parents[2]
#: docs/console.md's screenshots are rewritten only on request (``AGENTCA_UPDATE_SCREENSHOTS=1``,
#: ``make screenshots``): a plain test run takes them under its own temporary directory, so
#: ``make test`` leaves the checkout as it found it.
SHOTS = (
    REPO / "docs" / "console"
    if os.environ.get("AGENTCA_UPDATE_SCREENSHOTS") == "1"
    else Path(os.environ.get("TMPDIR", "/tmp")) / f"agentca-console-shots-{os.getpid()}"
)
IDLE_SECONDS = 15  # the CA's console_idle_seconds here: short, so a test can outwait it
WAIT = 20.0  # seconds any one browser wait may take before the test fails

selenium = pytest.importorskip("selenium")
if shutil.which("chromedriver") is None or shutil.which("chromium") is None:
    pytest.skip("needs Debian chromium and chromium-driver", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@dataclass
class ConsoleCA:
    """The running scenario with one API token per role."""

    scenario: Scenario
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.scenario.ca_url + "/console"


@pytest.fixture(scope="module")
def console_ca(tmp_path_factory: pytest.TempPathFactory, pg_module_url: str) -> Iterator[ConsoleCA]:
    s = Scenario.create(tmp_path_factory.mktemp("console") / "work", pg_module_url)
    s.env["AGENTCA_CONSOLE_IDLE_SECONDS"] = str(IDLE_SECONDS)
    s.setup()
    tokens = {
        "operator": s.operator_token,
        "auditor": s.cli("apitoken", "create", "audit", "--role", "auditor"),
        "read-only": s.cli("apitoken", "create", "viewer", "--role", "read-only"),
    }
    with s.servers(gateway=False):
        s.new_agent().enroll(s.enrollment_token())  # one certificate from the start
        yield ConsoleCA(s, tokens)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium Manager fetch anything
    opts = Options()
    opts.binary_location = str(shutil.which("chromium"))
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    service = Service(executable_path=str(shutil.which("chromedriver")))
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def b(browser: WebDriver) -> WebDriver:
    """The browser, signed out (no cookies) at the start of each test."""
    browser.delete_all_cookies()
    return browser


def until(driver: WebDriver, condition: Callable[[WebDriver], object]) -> object:
    """``condition``'s first truthy value, waiting at most :data:`WAIT` seconds; an element
    missing or replaced by the next page while it is read just means "not yet"."""

    def settled(d: WebDriver) -> object:
        try:
            return condition(d)
        except WebDriverException as exc:  # chromium's form of "stale" while a page loads
            if "does not belong to the document" in str(exc):
                return False
            raise

    return WebDriverWait(
        driver, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    ).until(settled)


def wait_for(driver: WebDriver, css: str) -> object:
    """The first element matching ``css``, waiting at most :data:`WAIT` seconds."""
    return until(driver, lambda d: d.find_element(By.CSS_SELECTOR, css))


def text_of(driver: WebDriver, css: str) -> str:
    """The text of the first element matching ``css`` once the page has one."""
    return str(until(driver, lambda d: d.find_element(By.CSS_SELECTOR, css).text or " "))


def sign_in(driver: WebDriver, ca: ConsoleCA, role: str, path: str = "/") -> None:
    driver.get(ca.url + "/sign-in?next=" + urllib.parse.quote("/console" + path))
    field = driver.find_element(By.ID, "token")
    field.send_keys(ca.tokens[role])
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, "#whoami")


def shot(driver: WebDriver, name: str) -> None:
    """A screenshot of the current page for docs/console.md."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})  # type: ignore[attr-defined]
    height = int(metrics["cssContentSize"]["height"])
    driver.set_window_size(1280, max(600, min(height + 100, 1800)))  # the whole page, bounded
    try:
        assert driver.save_screenshot(str(SHOTS / f"{name}.png")), f"no screenshot of {name}"
    finally:
        driver.set_window_size(1280, 900)
    assert (SHOTS / f"{name}.png").stat().st_size > 1000, f"an empty screenshot of {name}"

"""The dashboard in a real browser: Debian's headless Chromium driven by selenium.

The page is opened once; a breaker is tripped from another process and its row turns open
without a reload, counts down, refuses a reset without the token, then takes controls with
it. ``$DISTBREAKER_SCREENSHOT_DIR`` set: the README's ``dashboard.png`` is saved there.
A failing test leaves a screenshot next to it (or in its tmp_path) and prints the path.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from distbreaker.diagnostics import breaker_for
from distbreaker.store import connect
from tests.integration.test_dashboard import (
    TOKEN,
    DashboardProcess,
    breaker,
    one_failure,
    trip_elsewhere,
    write_token,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_DIR_ENV = "DISTBREAKER_SCREENSHOT_DIR"
WAIT = 15.0  # generous for a loaded machine; updates arrive within a second


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.skip(
            f"no browser: {', '.join(missing)} missing (Debian's chromium and chromium-driver; "
            ".ci/ensure-system-packages installs them)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1400,820",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium never downloads one
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def screenshot_on_failure(driver: Any, where: Path) -> Iterator[None]:
    try:
        yield
    except BaseException:
        path = where / "dashboard-failure.png"
        with contextlib.suppress(Exception):
            driver.save_screenshot(str(path))
            print(f"\nscreenshot of the failure: {path}")
        raise


def wait_until(driver: Any, check: Callable[[], object], what: str) -> Any:
    """Poll ``check`` in the page until it is truthy (bounded; never a fixed sleep)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda _: check())
    except TimeoutException:
        raise AssertionError(f"timed out after {WAIT:g}s waiting for {what}") from None


def row_state(driver: Any, name: str) -> str | None:
    return driver.execute_script(  # type: ignore[no-any-return]
        "const c = document.querySelector(`tr[data-name='${arguments[0]}'] td.state`);"
        "return c ? c.dataset.state : null;",
        name,
    )


def resets_in(driver: Any, name: str) -> float | None:
    text = driver.execute_script(
        "const c = document.querySelector(`tr[data-name='${arguments[0]}'] td.resets`);"
        "return c ? c.textContent : null;",
        name,
    )
    if not text or not text.endswith("s") or text == "-":
        return None
    return float(text[:-1])


def control(driver: Any, name: str, button: str, token: str = "", **fields: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    token_box = driver.find_element(By.ID, "token")
    token_box.clear()
    if token:
        token_box.send_keys(token)
    Select(driver.find_element(By.ID, "target")).select_by_value(name)
    for field, value in fields.items():
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    driver.execute_script("document.getElementById('result').textContent = ''")
    driver.find_element(By.CSS_SELECTOR, f"button[data-action='{button}']").click()


def timeline_end(driver: Any, name: str) -> float:
    """Seconds drawn for the state ``name`` is in now, if it is open (else 0)."""
    width = driver.execute_script(
        "const r = document.querySelector(`tr[data-name='${arguments[0]}'] svg rect:last-of-type`);"
        "return r && r.classList.contains('s-open') ? r.getAttribute('width') : '0';",
        name,
    )
    return float(width)


def result_text(driver: Any) -> str:
    return driver.execute_script(  # type: ignore[no-any-return]
        "return document.getElementById('result').textContent"
    )


def test_a_trip_elsewhere_turns_the_row_open_live_and_controls_need_the_token(
    browser: Any, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"browser-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    client = connect(redis_url, timeout=2.0)
    server = DashboardProcess(redis_url, prefix, write_token(tmp_path))
    try:
        server.wait_ready()
        shots = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path)
        with screenshot_on_failure(browser, shots):
            run_the_scenario(browser, server, redis_url, prefix, shots)
    finally:
        server.stop()
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


def run_the_scenario(
    driver: Any, server: DashboardProcess, redis_url: str, prefix: str, shots: Path
) -> None:
    github = breaker(redis_url, prefix, "github", threshold=5)
    one_failure(github)
    one_failure(github)
    one_failure(breaker(redis_url, prefix, "payments", threshold=3))
    one_failure(breaker(redis_url, prefix, "docker-registry", threshold=3))
    search = breaker(redis_url, prefix, "search", threshold=3)
    one_failure(search)
    search.force_closed()

    driver.get(server.url)
    wait_until(driver, lambda: row_state(driver, "payments") == "closed", "payments closed")
    wait_until(
        driver,
        lambda: driver.find_element("id", "live").text == "live",
        "the live stream",
    )
    driver.execute_script("window.__sameDocument = true")

    # a worker in another process trips the breaker: the open page shows it, no reload
    assert trip_elsewhere(redis_url, prefix, "payments", threshold=3, reset=45) == "open"
    tripped = time.monotonic()
    wait_until(driver, lambda: row_state(driver, "payments") == "open", "payments open")
    print(f"\nthe row turned open {(time.monotonic() - tripped) * 1000:.0f} ms after the trip")
    assert driver.execute_script("return window.__sameDocument === true"), "the page reloaded"

    # the time until reset counts down between updates
    first = wait_until(driver, lambda: resets_in(driver, "payments"), "a countdown")
    assert 0 < first <= 45
    wait_until(
        driver,
        lambda: (left := resets_in(driver, "payments")) is not None and left < first - 0.5,
        "the countdown to move",
    )

    # without the token the control is refused and Redis keeps the breaker open
    operator = breaker_for(connect(redis_url, timeout=2.0), prefix, "payments")
    before = operator.status()
    control(driver, "payments", "reset")
    wait_until(driver, lambda: "HTTP 401" in result_text(driver), "the refusal")
    after = operator.status()
    assert (after.state, after.generation) == ("open", before.generation)

    # with the token: open another breaker for five minutes, with a reason
    control(
        driver,
        "docker-registry",
        "hold_open",
        TOKEN,
        seconds="300",
        reason="registry maintenance <b>tonight</b>",
    )
    wait_until(driver, lambda: row_state(driver, "docker-registry") == "open", "a timed open")
    wait_until(
        driver,
        lambda: (
            "registry maintenance <b>tonight</b>" in driver.find_element("id", "events").text
        ),  # shown as text, not as markup
        "the reason among the transitions",
    )
    assert not driver.find_elements("css selector", "#events b")
    assert 290 < (resets_in(driver, "docker-registry") or 0) <= 300
    if os.environ.get(SCREENSHOT_DIR_ENV):
        wait_until(
            driver,
            lambda: timeline_end(driver, "docker-registry") >= 2,
            "a few seconds of the timed open on its timeline",
        )
        driver.save_screenshot(str(shots / "dashboard.png"))

    # reset with the token: the row closes and so does the breaker in Redis
    control(driver, "payments", "reset", TOKEN)
    wait_until(driver, lambda: row_state(driver, "payments") == "closed", "payments closed again")
    assert operator.status().state == "closed"
    assert "payments is now closed" in result_text(driver)

    # the page ran under its Content-Security-Policy without a single violation
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not [e for e in severe if "401" not in e.get("message", "")], severe

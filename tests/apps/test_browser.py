"""End to end in a real browser: headless Chromium, driven by Selenium, against ``python -m server``.

What only a browser can show: the form really submits with its CSRF token and follows the redirect, an entry
with markup in it is displayed as text (and no script runs), a validation error appears next to its field, the
todo page's script works against the API, the same page works with JavaScript turned off, the site's icon is an
image a browser decodes, and the page looks right (a screenshot is saved for a person to see).

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the Python package ``selenium``; where any of
them is missing, the tests skip and say which.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")

try:
    from selenium import webdriver
    from selenium.common.exceptions import (
        NoAlertPresentException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None

pytestmark = [
    pytest.mark.skipif(webdriver is None, reason="selenium is not installed (python -m pip install selenium)"),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(CHROMEDRIVER is None, reason="chromedriver is not installed (apt-get install chromium-driver)"),
]

WAIT = 10  # seconds for any one thing to appear in the page

# Headless, and quiet: this machine has no network, and without the background-networking flags Chromium keeps
# trying to reach Google's services (updates, sync, field trials), flooding the log with refused connections.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,1000",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess("--data-dir", str(tmp_path_factory.mktemp("browser-data"))) as server:
        yield server


@contextmanager
def chromium(profile: Path, *, javascript: bool = True) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with its own profile folder; ``javascript=False`` is a visitor who turned it off."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT * 2)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture(scope="module")
def browser_without_javascript(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path_factory.mktemp("chromium-profile-nojs"), javascript=False) as driver:
        yield driver


def wait_for(browser: webdriver.Chrome, css: str):
    """The element matching ``css`` once it is visible (polled by Selenium, bounded by WAIT)."""
    return WebDriverWait(browser, WAIT).until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)))


def wait_until(browser: webdriver.Chrome, condition) -> object:
    """``condition(browser)`` once it is true. The todo page redraws its list after every change, and a form's
    redirect replaces the whole page, so an element found a moment ago may be gone: that just means "not yet",
    and Selenium polls again. Chrome says so either as a stale element or, when the page is replaced between
    finding the element and reading it, as "Node with given id does not belong to the document"."""

    def checked(browser: webdriver.Chrome) -> object:
        try:
            return condition(browser)
        except WebDriverException as error:
            if "does not belong to the document" in (error.msg or ""):
                return False
            raise

    return WebDriverWait(browser, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(checked)


def todo_items(browser: webdriver.Chrome) -> list[tuple[str, bool]]:
    """The todo list as drawn: each item's text and whether it is marked done."""
    script = """return [...document.querySelectorAll('#todo-list li')]
                  .map(li => [li.querySelector('label').textContent, li.classList.contains('done')]);"""
    return [tuple(item) for item in browser.execute_script(script)]


def assert_no_alert(browser: webdriver.Chrome) -> None:
    """No script of a visitor's ran: it would have opened an alert."""
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is what raises


def test_sign_the_guestbook(server, browser, tmp_path):
    browser.get(server.url + "/guestbook/")
    assert browser.title == "Guestbook · ladder"
    browser.find_element(By.ID, "name").send_keys("Ada <b>Lovelace</b>")
    browser.find_element(By.ID, "message").send_keys("Hello from Chromium! <script>alert('xss')</script>")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()

    flash = wait_for(browser, "p.flash")
    assert "Thank you, Ada <b>Lovelace</b>" in flash.text
    assert browser.find_element(By.CSS_SELECTOR, ".entry-name").text == "Ada <b>Lovelace</b>"
    assert browser.find_element(By.CSS_SELECTOR, ".entry-message").text == (
        "Hello from Chromium! <script>alert('xss')</script>"
    )
    assert not browser.find_elements(By.CSS_SELECTOR, ".entry-name b"), "the markup is text, not elements"
    assert_no_alert(browser)
    assert browser.current_url == server.url + "/guestbook/", "Post/Redirect/Get: back on the list"


def test_a_validation_error_appears_next_to_its_field(server, browser, tmp_path):
    browser.get(server.url + "/guestbook/")
    browser.find_element(By.ID, "message").send_keys("Forgot my name, kept my message.")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()

    error = wait_for(browser, "#name-error")
    assert error.text.endswith("Please tell us your name.")
    field = error.find_element(By.XPATH, "..")
    assert field.find_element(By.ID, "name").get_attribute("aria-invalid") == "true"
    assert browser.find_element(By.ID, "message").get_attribute("value") == "Forgot my name, kept my message."
    assert not browser.find_elements(By.ID, "message-error")

    # A browser shows this page with its styles (the stylesheet was served by the event loop).
    color = error.value_of_css_property("color")
    assert color in ("rgba(179, 38, 30, 1)", "rgb(179, 38, 30)"), color
    screenshot = tmp_path / "guestbook.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000


def test_the_todo_page_works_through_the_api(server, browser):
    browser.get(server.url + "/todo/")
    title = wait_for(browser, "#todo-title")
    title.send_keys("Try the <em>API</em>")
    browser.find_element(By.CSS_SELECTOR, "#todo-form button").click()
    wait_until(browser, lambda b: todo_items(b) == [("Try the <em>API</em>", False)])
    assert title.get_attribute("value") == ""
    assert not browser.find_elements(By.CSS_SELECTOR, "#todo-list em"), "the title is text, not markup"

    browser.find_element(By.CSS_SELECTOR, "#todo-list li input[type=checkbox]").click()
    wait_until(browser, lambda b: todo_items(b) == [("Try the <em>API</em>", True)])

    browser.find_element(By.CSS_SELECTOR, "#todo-form button").click()  # An empty title: the API says 422.
    error = wait_for(browser, "#todo-error")
    assert error.text.endswith("The title must be some text.")
    assert todo_items(browser) == [("Try the <em>API</em>", True)]

    wait_until(browser, lambda b: b.find_element(By.CSS_SELECTOR, "#todo-list li button")).click()
    wait_for(browser, "#todo-empty")
    assert todo_items(browser) == []


def flash_says(text: str):
    """A wait condition: the page's flash message reads ``text`` (so the form's redirect has been followed)."""
    return lambda browser: browser.find_element(By.CSS_SELECTOR, "p.flash").text == text


def test_the_todo_page_works_without_javascript(server, browser_without_javascript):
    browser = browser_without_javascript
    browser.get(server.url + "/todo/")
    # A browser shows what is inside <noscript> only when scripting is off for the page (WebDriver's own
    # execute_script still works, so it cannot tell): seeing the notice proves static/todo.js does not run.
    notice = wait_for(browser, "#todo-app noscript p.notice")
    assert "plain forms" in notice.text
    # Styled as information (the info wash), not as the green of a success.
    background = notice.value_of_css_property("background-color")
    assert background in ("rgba(232, 240, 251, 1)", "rgb(232, 240, 251)"), background

    browser.find_element(By.ID, "todo-title").send_keys("Without <em>scripts</em>")
    browser.find_element(By.CSS_SELECTOR, "#todo-form button[type=submit]").click()
    wait_until(browser, flash_says("Added \u201cWithout <em>scripts</em>\u201d."))
    assert browser.current_url == server.url + "/todo/", "Post/Redirect/Get: back on the page"
    item = "//ul[@id='todo-list']/li[span[@class='todo-title'][.='Without <em>scripts</em>']]"
    assert browser.find_element(By.XPATH, item).get_attribute("class") == ""

    browser.find_element(By.XPATH, item + "//button[.='Done']").click()
    wait_until(browser, flash_says("Marked \u201cWithout <em>scripts</em>\u201d done."))
    assert browser.find_element(By.XPATH, item).get_attribute("class") == "done"

    browser.find_element(By.XPATH, item + "//button[.='Delete']").click()
    wait_until(browser, flash_says("Deleted \u201cWithout <em>scripts</em>\u201d."))
    assert not browser.find_elements(By.XPATH, item)


def test_the_site_icon_is_an_image_the_browser_decodes(server, browser):
    browser.get(server.url + "/")
    linked = browser.find_element(By.CSS_SELECTOR, 'link[rel="icon"]').get_attribute("href")
    assert linked == server.url + "/static/favicon.ico"
    script = """return Promise.all(arguments[0].map(url => {
                  const image = new Image();
                  image.src = url;
                  return image.decode().then(() => [image.naturalWidth, image.naturalHeight]);
                }));"""
    sizes = browser.execute_script(script, [server.url + "/favicon.ico", linked])
    assert all(size in ([16, 16], [32, 32]) for size in sizes), sizes

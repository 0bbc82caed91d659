"""The page end to end: a real headless Chromium against `vpt-serve --demo` (see conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.api.errors import ERRORS
from app.images import NotAnImageError
from tests.servers import Server, run_server
from tests.web.conftest import WAIT_S, browser_missing, copy_if_asked, save_full_page

pytestmark = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def wait_for(driver, condition, what: str, timeout_s: float = WAIT_S):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"timed out after {timeout_s:.0f} s waiting for {what}"
    )


def open_page(driver, server: Server) -> None:
    driver.get(server.url + "/")
    wait_for(driver, lambda d: by_id(d, "model").get_attribute("data-state") == "ready", "the model to show as ready")
    wait_for(driver, lambda d: classes_listed(d), "the class list")


def classes_listed(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#class-list li:not(.none) > span')].map(s => s.textContent)"
    )


def bar_labels(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#bars .bar-row')].map(r => r.dataset.label)")


def focus_file_input_by_keyboard(driver, presses: int = 6) -> None:
    """Tab from the top of the page to the file input behind the drop zone."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement && document.activeElement.blur()")
    for _ in range(presses):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.switch_to.active_element.get_attribute("id") == "file":
            return
    raise AssertionError(f"the file input was not reached with {presses} presses of Tab")


def upload(driver, path: Path) -> None:
    by_id(driver, "file").send_keys(str(path))


def test_upload_shows_bars_for_the_registered_classes(browser, server: Server, shape_image: Path, artifacts: Path):
    open_page(browser, server)
    registered = classes_listed(browser)
    assert set(registered) == set(server.get_json("/classes")["classes"])
    model = server.get_json("/readyz")["model"]
    assert model["id"] in by_id(browser, "model").text and model["variant"] in by_id(browser, "model").text

    upload(browser, shape_image)
    top_k = int(by_id(browser, "top-k").get_attribute("value"))
    wait_for(browser, lambda d: len(bar_labels(d)) == min(top_k, len(registered)), "the probability bars")
    labels = bar_labels(browser)
    assert set(labels) <= set(registered)
    rows = browser.execute_script(
        """return [...document.querySelectorAll('#bars .bar-row')].map(r => ({
             fill: r.querySelector('.bar-fill').getBoundingClientRect().width,
             track: r.querySelector('.bar-track').getBoundingClientRect().width,
             err: !!r.querySelector('.bar-err'), text: r.textContent}))"""
    )
    assert rows[0]["fill"] > 0 and all(r["err"] and "%" in r["text"] for r in rows)
    assert [r["fill"] for r in rows] == sorted((r["fill"] for r in rows), reverse=True)  # sorted by probability
    assert by_id(browser, "reading").text.strip()
    assert by_id(browser, "used-samples").text == str(by_id(browser, "samples").get_attribute("value"))
    assert by_id(browser, "preview").is_displayed()
    assert not by_id(browser, "error").is_displayed()

    # Nothing but the server itself was contacted (blob: previews are not network requests).
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(server.url + "/") for u in urls), urls

    save_full_page(browser, artifacts / "page-answer.png")


def click_example(driver, name: str) -> tuple[str, list[str]]:
    """Click one example picture; returns the reading's kind and the bars' labels of its answer."""
    driver.execute_script("document.getElementById('reading').removeAttribute('data-kind')")
    driver.find_element("css selector", f"#example-list [data-example='{name}']").click()
    wait_for(driver, lambda d: by_id(d, "reading").get_attribute("data-kind"), f"the answer to the example {name}")
    return by_id(driver, "reading").get_attribute("data-kind"), bar_labels(driver)


def test_each_example_is_one_click_from_its_reading(browser, server: Server, artifacts: Path):
    """The demo's examples: a fitted class read with confidence, a zero-shot class, and no class at all."""
    from app.demo import EXAMPLES

    open_page(browser, server)
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#example-list .example')].map(b => b.dataset.example)"
    )
    assert shown == [e.name for e in EXAMPLES]
    answers = {}
    for example in EXAMPLES:
        answers[example.name] = click_example(browser, example.name)
        assert by_id(browser, "preview").is_displayed() and not by_id(browser, "error").is_displayed()
        pressed = browser.execute_script(
            "return [...document.querySelectorAll('.example[aria-pressed=true]')].map(b => b.dataset.example)"
        )
        assert pressed == [example.name]
        if example.name == "yellow-heart":
            shot = artifacts / "page-example.png"
            save_full_page(browser, shot)
            copy_if_asked(shot)
    assert answers["yellow-heart"][0] == "confident" and answers["yellow-heart"][1][0] == "yellow heart"
    assert answers["blue-triangle"][1][0] == "blue triangle"  # registered by name only, never fitted
    assert answers["black"][0] == "unknown"  # no class: the calibrated unknown flag fires


def test_fewer_samples_and_a_new_class_show_in_the_next_answer(browser, server: Server, shape_image: Path):
    open_page(browser, server)
    upload(browser, shape_image)
    wait_for(browser, lambda d: bar_labels(d), "the first answer")

    # The slider changes the samples of the next answer (keyboard: Home jumps to 1).
    from selenium.webdriver.common.keys import Keys

    by_id(browser, "samples").send_keys(Keys.HOME)
    wait_for(browser, lambda d: by_id(d, "used-samples").text == "1", "an answer with 1 sample")

    by_id(browser, "top-k").clear()
    by_id(browser, "top-k").send_keys("20", Keys.TAB)
    new = "pink arrow/left"  # a "/" once made the remove button answer "Not Found"
    by_id(browser, "new-class").send_keys(new, Keys.ENTER)
    wait_for(browser, lambda d: new in classes_listed(d), "the new class in the list")
    wait_for(browser, lambda d: new in bar_labels(d), "the new class in the next answer")
    assert set(bar_labels(browser)) == set(server.get_json("/classes")["classes"])

    browser.find_element("css selector", f"#class-list button[aria-label='Remove class {new}']").click()
    wait_for(browser, lambda d: new not in classes_listed(d), "the class to be removed")
    wait_for(browser, lambda d: new not in bar_labels(d), "an answer without the removed class")
    assert new not in server.get_json("/classes")["classes"]


def test_a_non_image_shows_the_api_message(browser, server: Server, text_file: Path, artifacts: Path):
    open_page(browser, server)
    upload(browser, text_file)
    wait_for(browser, lambda d: by_id(d, "error").is_displayed(), "the error message")
    message = ERRORS[NotAnImageError][1]
    assert message in by_id(browser, "error-text").text
    assert "415" in by_id(browser, "error-title").text
    assert not by_id(browser, "result-body").is_displayed()
    # The page keeps working: it is not a blank page.
    assert by_id(browser, "drop").is_displayed() and classes_listed(browser)
    save_full_page(browser, artifacts / "page-error.png")


def test_phone_width_and_labels(browser, server: Server, shape_image: Path, artifacts: Path):
    browser.set_window_size(390, 844)
    try:
        open_page(browser, server)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
        unlabelled = browser.execute_script(
            """return [...document.querySelectorAll('input, button')]
                 .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
                 .map(e => e.id || e.outerHTML)"""
        )
        assert unlabelled == []
        focus_file_input_by_keyboard(browser)
        outline = browser.execute_script("return getComputedStyle(document.getElementById('drop')).outlineStyle")
        assert outline not in ("", "none"), "the drop zone shows no focus ring"
        upload(browser, shape_image)
        wait_for(browser, lambda d: bar_labels(d), "an answer at phone width")
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"with an answer the page is {overflow} px wider than a phone screen"
        save_full_page(browser, artifacts / "page-phone.png")
    finally:
        browser.set_window_size(1280, 860)


def test_changing_classes_asks_for_the_token(browser, tmp_path_factory):
    """With VPT_TOKEN set, the page asks for it, shows 401/403 messages, and keeps it for the tab."""
    from selenium.webdriver.common.keys import Keys

    with run_server(tmp_path_factory.mktemp("web-token-server"), token="open sesame") as server:
        try:
            open_page(browser, server)
            assert by_id(browser, "token-box").is_displayed()
            new = "teal star"

            by_id(browser, "new-class").send_keys(new, Keys.ENTER)
            wait_for(browser, lambda d: "401" in by_id(d, "error-title").text, "the 401 message")
            assert "Authorization: Bearer" in by_id(browser, "error-text").text
            assert browser.switch_to.active_element.get_attribute("id") == "token"

            by_id(browser, "token").send_keys("wrong")
            by_id(browser, "add-button").click()
            wait_for(browser, lambda d: "403" in by_id(d, "error-title").text, "the 403 message")

            by_id(browser, "token").clear()
            by_id(browser, "token").send_keys("open sesame")
            by_id(browser, "add-button").click()
            wait_for(browser, lambda d: new in classes_listed(d), "the class added with the token")
            assert not by_id(browser, "error").is_displayed()

            browser.refresh()  # same tab: the token is still there, and only there
            open_page(browser, server)
            assert by_id(browser, "token").get_attribute("value") == "open sesame"
            browser.find_element("css selector", f"#class-list button[aria-label='Remove class {new}']").click()
            wait_for(browser, lambda d: new not in classes_listed(d), "the class removed with the token")
        finally:
            browser.execute_script("sessionStorage.clear()")


def test_api_docs_render_offline_under_their_policy(browser, server: Server):
    """Swagger UI comes from the server itself and runs under script-src 'self' (no CDN, no inline script)."""
    browser.get_log("browser")  # drop what earlier tests left (the log is read since its last reading)
    browser.get(server.url + "/docs")
    wait_for(browser, lambda d: d.find_elements("css selector", ".opblock-summary-path"), "the operations listed")
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements("css selector", ".opblock-summary-path")}
    assert {"/classify", "/classes", "/readyz"} <= paths
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

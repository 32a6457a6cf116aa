"""The web page at GET / in a real headless chromium (Debian's, driven by Playwright) against the stack:
files picked in the page go straight to moto's S3 (CORS preflight and all), get stitched, and play."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.audio import decoded_duration, make_tone

pytestmark = pytest.mark.usefixtures("show_log_on_failure")

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--autoplay-policy=no-user-gesture-required"]
SCREENSHOT_DIR = os.environ.get("PAGE_SCREENSHOT_DIR")  # set it to keep the screenshot


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser at {CHROMIUM}: `apt-get install chromium` (.ci/run does) to run the page test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: run `make install`")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{stack.api}/")
    yield page
    context.close()
    assert errors == []  # no uncaught script error on the page


def test_page_uploads_stitches_and_plays(page, tmp_path):
    first = make_tone(tmp_path / "first.mp3", 1.0)
    second = make_tone(tmp_path / "second.wav", 1.5, fmt="wav", freq=660)
    page.set_input_files("#files", [str(second), str(first)])
    rows = page.locator("#parts li")
    assert rows.count() == 2
    # Drag the second row above the first: the order sent is first.mp3, second.wav.
    rows.nth(1).drag_to(rows.nth(0))
    assert [t.split(". ", 1)[1] for t in page.locator("#parts .name").all_inner_texts()] == ["first.mp3", "second.wav"]
    page.fill("#gap_ms", "500")
    page.locator("#parts li").nth(1).locator("input[data-field=gain_db]").fill("-3")
    page.click("#stitch")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.inner_text("#status") == "done"

    expected = decoded_duration(first) + 0.5 + decoded_duration(second)
    segments = page.locator("#timeline .seg")
    assert segments.all_inner_texts() == ["first.mp3", "second.wav"]
    assert float(segments.nth(1).get_attribute("data-start")) == pytest.approx(1.5, abs=0.03)

    # Play it in the page: the element loads the result from S3 and reaches its end.
    page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=30_000)
    duration = page.evaluate("document.getElementById('player').duration")
    assert duration == pytest.approx(expected, abs=0.08)
    page.evaluate("""() => { const p = document.getElementById('player'); p.muted = true;
                             window.__ended = false; p.addEventListener('ended', () => window.__ended = true);
                             return p.play(); }""")
    page.wait_for_function("window.__ended === true", timeout=30_000)
    assert page.evaluate("document.getElementById('player').currentTime") == pytest.approx(duration, abs=0.1)
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "page.png"), full_page=True)


def test_page_reports_a_bad_part_on_its_row(page, tmp_path):
    good = make_tone(tmp_path / "good.mp3", 1.0)
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio\n")
    page.set_input_files("#files", [str(good), str(text)])
    page.click("#stitch")
    page.wait_for_selector("#status.bad", timeout=60_000)
    assert "part 1 (uploads/" in page.inner_text("#status")
    assert page.locator("#parts li").nth(1).get_attribute("class") == "bad"
    assert page.is_hidden("#result")


def test_api_key_is_kept_in_the_browser(page, stack):
    page.fill("#api-key", "k-123")
    page.reload()
    assert page.input_value("#api-key") == "k-123"
    sent = []
    page.on("request", lambda r: sent.append(r.headers.get("x-api-key")) if r.url.endswith("/uploads") else None)
    good = Path(__file__)  # any file: only the request header matters here
    page.set_input_files("#files", [str(good)])
    page.click("#stitch")
    page.wait_for_selector("#status.bad", timeout=60_000)
    assert sent == ["k-123"]

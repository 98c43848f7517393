"""The web page in a real headless Chromium against the real service process: type a message, submit, see a
label and one score bar per label. A screenshot is saved for a human to look at."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from core.bundle import load_bundle
from tests.support.server import ServiceProcess, run_service

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (make system-deps installs it)")
    return CHROMIUM


@dataclass
class ServedPage:
    service: ServiceProcess
    page: Page
    external: list[str] = field(default_factory=list)  # URLs of the requests that went past the service


@contextmanager
def served_page(
    bundle_dir: Path, browser_path: str, viewport: dict[str, int] | None = None, **service: Any
) -> Iterator[ServedPage]:
    """The real service on ``bundle_dir`` and a headless Chromium page that records requests to elsewhere."""
    from playwright.sync_api import sync_playwright

    with run_service(bundle_dir, **service) as process, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=LAUNCH_ARGS, headless=True)
        try:
            # Playwright's viewport=None means "no viewport", not its default one.
            served = ServedPage(
                process, browser.new_page(viewport=viewport) if viewport else browser.new_page()
            )
            served.page.on(
                "request",
                lambda request: (
                    None if request.url.startswith(process.base_url) else served.external.append(request.url)
                ),
            )
            yield served
        finally:
            browser.close()


def test_type_a_message_and_see_a_label(tiny_bundle_dir: Path, browser_path: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    labels = load_bundle(tiny_bundle_dir).manifest.labels
    screenshot = Path(os.environ.get("TEXTCLF_SCREENSHOT_DIR", tmp_path)) / "web_page.png"
    with served_page(tiny_bundle_dir, browser_path, viewport={"width": 900, "height": 700}) as served:
        page = served.page
        page.goto(served.service.base_url + "/")
        expect(page.locator("#model")).to_contain_text("tiny-related")
        page.fill("#text", "We need water and tents, the river flooded our village")
        page.click("#submit")
        expect(page.locator("#result")).to_be_visible(timeout=15_000)
        label = page.locator("#label").inner_text()
        assert label in labels
        expect(page.locator("#bars .bar")).to_have_count(len(labels))
        assert page.locator("#error").inner_text() == ""
        page.screenshot(path=str(screenshot), full_page=True)

        # An empty message shows the API's error instead of a result.
        page.fill("#text", "   ")
        page.click("#submit")
        expect(page.locator("#error")).to_contain_text("empty_text")
    assert served.external == []  # no CDN, no third-party requests
    assert screenshot.stat().st_size > 0


def test_swagger_ui_renders_offline(tiny_bundle_dir: Path, browser_path: str) -> None:
    """/schema/swagger draws the operations with no request leaving the service (no CDN)."""
    from playwright.sync_api import expect

    with served_page(tiny_bundle_dir, browser_path) as served:
        page = served.page
        page.goto(served.service.base_url + "/schema/swagger")
        expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=20_000)
        assert "/classify" in page.locator(".swagger-ui").inner_text()
    assert served.external == []


def test_page_asks_for_the_api_key_and_sends_it(
    tiny_bundle_dir: Path, browser_path: str, tmp_path: Path
) -> None:
    """With a key configured the page asks for it, keeps it in sessionStorage and sends it as Bearer."""
    from playwright.sync_api import expect

    key = "page-" + "3f9a1c7e5b2d4f6a8c0e"
    key_file = tmp_path / "api-key"
    key_file.write_text(key)
    with served_page(tiny_bundle_dir, browser_path, env={"TEXTCLF_API_KEY_FILE": str(key_file)}) as served:
        page = served.page
        page.goto(served.service.base_url + "/")
        expect(page.locator("#auth")).to_be_visible(timeout=15_000)
        expect(page.locator("#model")).to_contain_text("API key")
        # A wrong key is refused and the page asks again.
        page.fill("#key", "not-the-key")
        page.click("#save-key")
        expect(page.locator("#auth")).to_be_visible(timeout=15_000)
        expect(page.locator("#model")).to_contain_text("refused")
        page.fill("#key", key)
        page.click("#save-key")
        expect(page.locator("#model")).to_contain_text("tiny-related", timeout=15_000)
        expect(page.locator("#auth")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('textclf-api-key')") == key
        page.fill("#text", "We need water and tents")
        page.click("#submit")
        expect(page.locator("#result")).to_be_visible(timeout=15_000)
        assert page.locator("#error").inner_text() == ""
    assert key not in served.service.logs()

"""Open a Snakemake HTML report in headless Chromium (Selenium) and check what it shows.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium``
Python package (test extra); :func:`chromium_or_skip` skips the calling test, saying
which of them is missing.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import pytest


def chromium_or_skip() -> tuple[str, str]:
    """Paths of the Chromium binary and of chromedriver, or skip the test."""
    pytest.importorskip("selenium",
                        reason="the report browser test needs selenium (pip install -e '.[test]')")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        missing = [name for name, path in (("chromium", browser), ("chromium-driver", driver))
                   if not path]
        pytest.skip(f"headless Chromium not available (missing Debian package(s) {missing}; "
                    ".ci/run installs them when it runs as root)")
    return browser, driver


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


# Every <img> of the page, with whether it loaded (complete with a decoded width).
_IMAGES = """
return Array.from(document.images).map(img => ({
    src: img.src.slice(0, 40), complete: img.complete, width: img.naturalWidth}));
"""


_EYE = 'a[iconname="eye"]'
_VIEW = 'a[iconname="eye"][href="#"]'

# The result the content pane shows (an <img> that finished loading, or an <iframe>),
# identified by its data URI; null while it still shows `arguments[0]` or nothing.
_SHOWN = """
const byUri = new Map(Object.entries(results).map(([path, r]) => [r.data_uri, path]));
const el = Array.from(document.querySelectorAll('#app img, #app iframe'))
    .find(e => byUri.has(e.getAttribute('src')));
if (!el) return null;
const path = byUri.get(el.getAttribute('src'));
if (path === arguments[0]) return null;
if (el.tagName === 'IMG' && !el.complete) return null;
return {path: path, tag: el.tagName, width: el.tagName === 'IMG' ? el.naturalWidth : null};
"""


def browse_report(report: Path, *, browser: str, driver: str, screenshot: Path,
                  screenshot_result: str | None = None) -> dict[str, Any]:
    """Show every result of ``report`` through its own buttons; return what was seen.

    For each category and subcategory the result table is opened through the menu links
    and every result's view button clicked. Returns ``shown``
    (result path -> ``{"mime", "img_width"}`` for images, the iframe text for HTML),
    ``broken`` (images that did not load), ``console`` (browser log entries of level
    SEVERE), ``external`` (resources fetched from anywhere but data URIs) and ``results``
    (the report's own result table: path -> mime type).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1200"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    web = webdriver.Chrome(service=Service(driver), options=options)
    seen: dict[str, Any] = {"shown": {}, "broken": [], "console": []}
    try:
        web.get(report.resolve().as_uri())
        wait = WebDriverWait(web, 30)
        wait.until(lambda w: w.execute_script("return typeof app !== 'undefined' && "
                                              "typeof results !== 'undefined'"))
        seen["results"] = web.execute_script(
            "return Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.mime_type]))")
        tree = web.execute_script("return categories")
        shown = None
        for category, subcategories in sorted(tree.items()):
            for subcategory, paths in subcategories.items():
                # through the menu: Results -> category -> subcategory (a category with a
                # single subcategory opens it directly)
                if web.find_elements(By.LINK_TEXT, "Results"):
                    web.find_element(By.LINK_TEXT, "Results").click()
                wait.until(lambda w, c=category: w.find_elements(By.LINK_TEXT, c))[0].click()
                if len(subcategories) > 1:
                    wait.until(lambda w, c=subcategory: w.find_elements(By.LINK_TEXT, c))[0].click()
                # one view button per result; files the browser cannot show are download links
                n_results = len(paths)
                wait.until(lambda w, n=n_results: len(w.find_elements(By.CSS_SELECTOR, _EYE)) == n)
                # `shown` carries over from the previous menu: until the first click here
                # takes effect the pane still shows that result, which must not count
                for i in range(len(web.find_elements(By.CSS_SELECTOR, _VIEW))):
                    web.find_elements(By.CSS_SELECTOR, _VIEW)[i].click()
                    # wait for the content pane to show another result, then identify it
                    item = wait.until(lambda w, before=shown: w.execute_script(_SHOWN, before))
                    shown = item["path"]
                    if item["tag"] == "IMG":
                        seen["shown"][shown] = {"mime": seen["results"][shown],
                                                "img_width": item["width"]}
                        if shown == screenshot_result:
                            web.save_screenshot(str(screenshot))
                    else:
                        web.switch_to.frame(web.find_element(By.CSS_SELECTOR, "#app iframe"))
                        text = wait.until(lambda w: w.find_element(By.TAG_NAME, "body").text)
                        web.switch_to.default_content()
                        seen["shown"][shown] = {"mime": seen["results"][shown], "text": text}
                    seen["broken"] += [img for img in web.execute_script(_IMAGES)
                                       if not (img["complete"] and img["width"] > 0)]
        if screenshot_result is None:
            web.save_screenshot(str(screenshot))
        seen["external"] = web.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name)"
            ".filter(n => !n.startsWith('data:'))")
        seen["console"] = [entry for entry in web.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        web.quit()
    return seen

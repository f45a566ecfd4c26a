"""Pictures of the viewer as a Galaxy user opens it: logged in through Galaxy's login page, the
history opened, one click on the eye icon of the viewer's dataset; in headless Chromium (Debian's,
driven by Playwright). Used by the demo (scripts/run_in_galaxy.py) and the viewer's browser test.

Usage: python viewer_screenshot.py GALAXY_URL EMAIL PASSWORD HISTORY_ID DATASET_ID HID OUT_PREFIX [X Y ZOOM]
writes OUT_PREFIX_overview.png and, with X Y ZOOM (slide pixels; screen pixels per slide pixel),
OUT_PREFIX_zoom.png of the slide around that point, the object there clicked.
"""

import shutil
import sys

VIEWPORT = {"width": 1600, "height": 1000}


def open_viewer(page, url: str, email: str, password: str, history_id: str, dataset: dict):
    """Log in, open the history, click the dataset's eye icon; the viewer's frame (locator and
    frame) once everything in view is drawn."""
    page.goto(f"{url}/login/start")
    page.fill("#login-form-name", email)
    page.fill("#login-form-password", password)
    page.click("form#login button[type=submit]")
    page.wait_for_url(lambda address: "/login" not in address, timeout=60_000)
    page.goto(f"{url}/histories/view?id={history_id}")
    page.locator(f"[data-hid='{dataset['hid']}'] a[title='View']").first.click()
    locator = page.frame_locator("iframe#frame")
    locator.locator("#viewer canvas").first.wait_for(timeout=60_000)
    frame = next(f for f in page.frames if f"/datasets/{dataset['id']}/display" in f.url)
    frame.evaluate("window.dlhisto.opened.then(() => window.dlhisto.drawn())")
    return locator, frame


def main() -> int:
    from playwright.sync_api import sync_playwright

    url, email, password, history_id, dataset_id, hid, prefix = sys.argv[1:8]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport=VIEWPORT)
        _, frame = open_viewer(page, url, email, password, history_id, {"id": dataset_id, "hid": hid})
        page.screenshot(path=f"{prefix}_overview.png")
        if len(sys.argv) > 8:
            x, y, zoom = (float(v) for v in sys.argv[8:11])
            frame.evaluate(f"window.dlhisto.goTo({x}, {y}, {zoom})")
            frame.evaluate("window.dlhisto.drawn()")
            frame.evaluate(f"window.dlhisto.select({x}, {y})")
            page.screenshot(path=f"{prefix}_zoom.png")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The viewer as a user meets it: one click from the Galaxy history, in a real browser.

Runs against the test command's Galaxy (scripts/test; the tool runs on its Slurm cluster):
uploads the real Aperio slide, the pretrained H&E model's nuclei of its dermis and two areas
drawn by eye, runs 'View on the slide', logs in through Galaxy's login page in headless
Chromium (Debian's, driven by Playwright), opens the history, clicks the output's eye icon,
and in the page Galaxy shows: zooms to a known nucleus at full resolution, checks the pixels of
its outline in a screenshot, clicks it and reads its measurements from the panel.
"""

import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

bioblend = pytest.importorskip("bioblend.galaxy")

GALAXY_URL = os.environ.get("DLHISTO_GALAXY_URL")
ADMIN_KEY = os.environ.get("DLHISTO_GALAXY_ADMIN_KEY")
CHROMIUM = shutil.which("chromium")
if not (GALAXY_URL and ADMIN_KEY and CHROMIUM):
    if os.environ.get("DLHISTO_SLURM_REQUIRED") or os.environ.get("DLHISTO_BROWSER_REQUIRED") and GALAXY_URL:
        raise RuntimeError("the viewer's browser test needs DLHISTO_GALAXY_URL, DLHISTO_GALAXY_ADMIN_KEY and chromium")
    pytest.skip("no Galaxy or no chromium to test the viewer with (scripts/test has both)", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from viewer_screenshot import VIEWPORT, open_viewer  # noqa: E402  (the demo's way to the viewer)

DATA = Path(__file__).resolve().parents[2] / "test-data"
EMAIL, PASSWORD = "viewer-test@dlhisto.local", "viewer-test-password"
OUTLINE = (255, 220, 0)
"""Unclassified objects' outline colour (dlhisto_core/view/layers.py)."""
ZOOM = 4
"""Screen pixels per slide pixel when the nucleus is looked at."""


@pytest.fixture(scope="module")
def viewer_dataset():
    """The history and the viewer's dataset, made by the tool in Galaxy."""
    admin = bioblend.GalaxyInstance(GALAXY_URL, key=ADMIN_KEY)
    users = admin.users.get_users(f_email=EMAIL)
    user = users[0] if users else admin.users.create_local_user("viewer-test", EMAIL, PASSWORD)
    gi = bioblend.GalaxyInstance(GALAXY_URL, key=admin.users.get_or_create_user_apikey(user["id"]))
    history = gi.histories.create_history("viewer test")
    uploaded = {}
    for name, ftype in (("cmu_small_region.svs", "svs"), ("cmu_nuclei_dermis.geojson", "geojson"),
                        ("cmu_regions.geojson", "geojson")):
        uploaded[name] = gi.tools.upload_file(str(DATA / name), history["id"], file_type=ftype)["outputs"][0]["id"]
    for dataset_id in uploaded.values():
        gi.datasets.wait_for_dataset(dataset_id, maxwait=600)
    run = gi.tools.run_tool(history["id"], "dlhisto_view", {
        "slide": {"src": "hda", "id": uploaded["cmu_small_region.svs"]},
        "objects": {"values": [{"src": "hda", "id": uploaded["cmu_nuclei_dermis.geojson"]}]},
        "regions": {"values": [{"src": "hda", "id": uploaded["cmu_regions.geojson"]}]}})
    job = gi.jobs.wait_for_job(run["jobs"][0]["id"], maxwait=900, check=False)
    assert job["state"] == "ok", gi.jobs.show_job(job["id"], full_details=True).get("stderr")
    return history, run["outputs"][0]


def known_nucleus() -> dict:
    """The largest nucleus of the dermis file: its outline (slide pixels) and measurements."""
    features = json.loads((DATA / "cmu_nuclei_dermis.geojson").read_text())["features"]
    largest = max((f for f in features if f["geometry"]["type"] == "Polygon"),
                  key=lambda f: f["properties"]["measurements"]["area"])
    return {"ring": np.array(largest["geometry"]["coordinates"][0]), **largest["properties"]["measurements"]}


def test_one_click_from_the_history_shows_the_slide_its_nuclei_and_measurements(viewer_dataset):
    from PIL import Image

    history, dataset = viewer_dataset
    nucleus = known_nucleus()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport=VIEWPORT)
        frame, viewer = open_viewer(page, GALAXY_URL, EMAIL, PASSWORD, history["id"], dataset)

        centre = nucleus["ring"].mean(axis=0)
        viewer.evaluate(f"window.dlhisto.goTo({centre[0]}, {centre[1]}, {ZOOM})")
        viewer.evaluate("window.dlhisto.drawn()")
        corners = [viewer.evaluate(f"window.dlhisto.imageToScreen({x}, {y})") for x, y in nucleus["ring"]]
        frame_box = page.locator("iframe#frame").bounding_box()
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)
        on_outline = np.array([shot[round(frame_box["y"] + c["y"]) + 1, round(frame_box["x"] + c["x"]) + 1]
                               for c in corners])
        # the outline is drawn inside the polygon's edge, 2 slide pixels (8 screen pixels) wide
        is_outline = np.abs(on_outline - OUTLINE).max(axis=1) <= 40
        assert is_outline.mean() > 0.8, on_outline[~is_outline][:5]
        middle = viewer.evaluate(f"window.dlhisto.imageToScreen({centre[0]}, {centre[1]})")
        inside = shot[round(frame_box["y"] + middle["y"]), round(frame_box["x"] + middle["x"])]
        assert np.abs(inside - OUTLINE).max() > 60  # the nucleus itself is the slide's, not painted over

        page.mouse.click(frame_box["x"] + middle["x"], frame_box["y"] + middle["y"])
        panel = frame.locator("#details table")
        panel.wait_for(timeout=30_000)
        shown = dict(zip(panel.locator("th").all_inner_texts(), panel.locator("td").all_inner_texts()))
        browser.close()
    assert shown["layer"] == "cmu_nuclei_dermis.geojson" and shown["class"] == "unclassified"
    assert int(float(shown["label"])) == nucleus["label"]
    assert float(shown["area"]) == nucleus["area"]
    assert float(shown["area_um2"]) == pytest.approx(nucleus["area_um2"], rel=1e-5)

"""The viewer: Deep Zoom tiles against OpenSlide's own tiler, overlays, the page, crafted input."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlhisto_core.base.errors import InputError
from dlhisto_core.io.writers import write_image
from dlhisto_core.view import tiles
from dlhisto_core.view.layers import ViewOptions
from dlhisto_core.view.page import make_viewer

DATA = Path(__file__).resolve().parent.parent / "test-data"
SLIDE = DATA / "cmu_small_region.svs"
CHROMIUM = shutil.which("chromium")
needs_browser = pytest.mark.skipif(not CHROMIUM and not os.environ.get("DLHISTO_BROWSER_REQUIRED"),
                                   reason="needs Debian's chromium (the test command installs it)")
needs_slide = pytest.mark.skipif(not SLIDE.exists(), reason="scripts/fetch_test_slides.py fetches the Aperio slide")


def tile(folder: Path, name: str, level: int, column: int, row: int, extension: str = "jpeg") -> np.ndarray:
    return np.asarray(Image.open(folder / "tiles" / f"{name}_files" / str(level) / f"{column}_{row}.{extension}"))


@needs_slide
def test_slide_tiles_match_openslides_deep_zoom_generator(tmp_path):
    """Every level has DeepZoomGenerator's size and tile grid; the tiles hold its pixels: at full
    resolution exactly (once both are JPEG-encoded alike), at coarser levels within the difference
    of the 2 x 2 mean and its Lanczos filter."""
    import openslide
    from openslide.deepzoom import DeepZoomGenerator

    summary = make_viewer(SLIDE, tmp_path / "view.html", tmp_path / "files")
    reference = DeepZoomGenerator(openslide.OpenSlide(str(SLIDE)), tile_size=tiles.TILE_SIZE, overlap=0,
                                  limit_bounds=False)
    assert summary.levels == reference.level_count == 13
    errors = {}
    for level in range(10, reference.level_count):  # tiles of 70 px and more (at 1 px: one mean vs the other)
        columns, rows = reference.level_tiles[level]
        written = sorted((tmp_path / "files" / "tiles" / "slide_files" / str(level)).iterdir())
        assert len(written) == columns * rows
        for column, row in {(0, 0), (columns - 1, rows - 1), (columns // 2, rows // 2)}:
            ours = tile(tmp_path / "files", "slide", level, column, row).astype(int)
            theirs = reference.get_tile(level, (column, row)).convert("RGB")
            if level == reference.level_count - 1:  # the same pixels, the same encoder: the same tile
                encoded = io.BytesIO()
                theirs.save(encoded, "JPEG", quality=tiles.JPEG_QUALITY)
                theirs = Image.open(encoded)
            theirs = np.asarray(theirs).astype(int)
            assert ours.shape == theirs.shape
            error = np.abs(ours - theirs).mean()
            errors[level] = max(errors.get(level, 0), error)
    assert max(errors.values()) < 7 and errors[12] == 0, errors  # a tile out of place: about 30


def test_pyramid_levels_halve_down_to_one_pixel_and_strips_do_not_show(tmp_path):
    """An image taller than several strips, odd sizes: each level is the one above halved (the
    mean of 2 x 2 blocks), whole, without seams between strips."""
    y, x = np.mgrid[:1300, :777]
    image = np.stack([128 + 100 * np.sin(y / 40), 128 + 100 * np.cos(x / 30), (y + x) % 256], axis=-1).astype(np.uint8)
    pyramid = tiles.write_pyramid(lambda top, rows: image[top:top + rows], 777, 1300, tmp_path, "x")
    assert pyramid.levels == 12
    level_10 = np.concatenate([np.concatenate([np.asarray(Image.open(tmp_path / "x_files" / "10" / f"{c}_{r}.jpeg"))
                                               for c in range(1)], axis=1) for r in range(2)])
    expected = tiles.halve_rgb(image)
    assert level_10.shape == expected.shape == (650, 389, 3)
    assert np.abs(level_10.astype(int) - expected).mean() < 3
    assert np.asarray(Image.open(tmp_path / "x_files" / "0" / "0_0.jpeg")).shape[:2] == (1, 1)
    assert 'Format="jpeg" Overlap="0" TileSize="512"><Size Width="777" Height="1300"/>' in (tmp_path / "x.dzi").read_text()


def test_overlay_pyramids_skip_empty_tiles_and_keep_thin_lines():
    """A one-pixel line stays opaque on every level; empty tiles are absent from the bitmaps."""
    import base64
    import tempfile

    line = np.zeros((1500, 1500, 4), np.uint8)
    line[700, :] = (255, 0, 0, 255)
    with tempfile.TemporaryDirectory() as folder:
        pyramid = tiles.write_pyramid(lambda top, rows: line[top:top + rows], 1500, 1500, Path(folder), "o", "png")
        written = {p.relative_to(Path(folder) / "o_files").as_posix() for p in (Path(folder) / "o_files").rglob("*.png")}
        bits = np.unpackbits(np.frombuffer(base64.b64decode(pyramid.present[11]), np.uint8), bitorder="little")
        assert written >= {"11/0_1.png", "11/2_1.png"} and "11/0_0.png" not in written
        assert bits[:9].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]  # the 3 x 3 tiles of level 11: the middle row
        coarse = np.asarray(Image.open(Path(folder) / "o_files" / "4" / "0_0.png"))
        assert coarse[..., 3].max() == 255 and tuple(coarse[coarse[..., 3] > 0][0][:3]) == (255, 0, 0)


def crafted_geojson(path: Path, name: str) -> None:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[100, 100], [160, 100], [160, 160],
                                                                            [100, 160], [100, 100]]]},
        "properties": {"objectType": "detection", "classification": {"name": name, "color": [0, 0, 255]},
                       "measurements": {name: 7, "area": 3600}}}]}))


def test_names_from_files_reach_the_page_only_as_data(tmp_path):
    name = '</script><script>alert(1)</script><img src=x onerror=alert(2)>'
    crafted_geojson(tmp_path / "objects.geojson", name)
    make_viewer(DATA / "nuclei.tif", tmp_path / "view.html", tmp_path / "files",
                objects=[(tmp_path / "objects.geojson", name)], slide_name=name)
    page = (tmp_path / "view.html").read_text()
    assert "<script>alert" not in page and "<img src=x" not in page
    data = json.loads(page.split('id="dlhisto-viewer">')[1].split("</script>")[0])
    assert data["name"] == name and data["layers"][0]["legend"][0]["name"] == name
    lookup = next((tmp_path / "files" / "tiles" / "objects_1_cells").glob("*.js")).read_text()
    assert "</script>" not in lookup and json.loads(lookup.split(",", 2)[2].rsplit(")", 1)[0])[0][4] == [7, 3600]


def huge_region(path: Path) -> None:
    """One region reaching far beyond any slide (1e8 px): clipped to the slide for clicks."""
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[-1e8, -1e8], [1e8, -1e8], [1e8, 1e8],
                                                                            [-1e8, 1e8], [-1e8, -1e8]]]},
        "properties": {"objectType": "annotation", "classification": {"name": "tissue"},
                       "measurements": {"area_mm2": 1.5}}}]}))


@needs_browser
def test_the_page_opens_from_disk_and_shows_crafted_names_as_text(tmp_path):
    """A downloaded copy opened from disk (file://): tiles and lookups load without a server; a
    class named like markup is shown as that text, and no script of it runs; a click outside
    the objects finds the region under them, which spans too many cells to be cut (the 'large'
    lookup)."""
    from playwright.sync_api import sync_playwright

    name = '<img src=x onerror="document.title=\'pwned\'">'
    crafted_geojson(tmp_path / "objects.geojson", name)
    huge_region(tmp_path / "region.geojson")
    write_image(tmp_path / "slide.ome.tif", np.full((1400, 1400, 3), 230, np.uint8), pixel_size=(0.5, 0.5))
    make_viewer(tmp_path / "slide.ome.tif", tmp_path / "view.html", tmp_path / "files",
                objects=[(tmp_path / "objects.geojson", "objects")], regions=[(tmp_path / "region.geojson", "r")],
                options=ViewOptions(cell_size=128))
    assert [p.name for p in (tmp_path / "files" / "tiles" / "regions_1_cells").iterdir()] == ["large.js"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto((tmp_path / "view.html").as_uri())
        page.evaluate("window.dlhisto.opened.then(() => window.dlhisto.drawn())")
        page.evaluate("window.dlhisto.goTo(130, 130, 2)")
        page.evaluate("window.dlhisto.drawn()")
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        shown = page.evaluate("window.dlhisto.select(130, 130)")
        legend = page.locator(".legend li").all_inner_texts()
        panel = page.locator("#details td").all_inner_texts()
        region = page.evaluate("window.dlhisto.select(1000, 1200)")
        title = page.title()
        browser.close()
    assert shown == {"layer": "objects", "class": name, "measurements": {name: 7, "area": 3600}}
    assert legend == ["tissue: 1", f"{name}: 1"] and panel[:2] == ["objects", name]
    assert region == {"layer": "r", "class": "tissue", "measurements": {"area_mm2": 1.5}}
    assert title == "slide.ome.tif: dlhisto viewer" and not dialogs
    assert (np.abs(shot.astype(int) - (0, 0, 255)).max(axis=2) < 40).sum() > 200  # the square's blue outline


def test_a_heatmap_that_cannot_be_placed_is_refused_and_nothing_is_left(tmp_path):
    write_image(tmp_path / "map.tif", np.zeros((100, 300), np.float32))
    with pytest.raises(InputError, match="records no pixel size and its shape"):
        make_viewer(DATA / "nuclei.tif", tmp_path / "view.html", tmp_path / "files",
                    heatmaps=[(tmp_path / "map.tif", "map.tif")])
    assert not (tmp_path / "view.html").exists() and list((tmp_path / "files").iterdir()) == []


def test_heatmaps_are_placed_by_pixel_size_and_open_switched_off_beside_objects(tmp_path):
    probabilities = np.zeros((128, 128, 2), np.float32)
    probabilities[:64, :, 1] = 1.0
    write_image(tmp_path / "p.ome.tif", probabilities, pixel_size=(1.0, 1.0))
    write_image(tmp_path / "image.ome.tif", np.full((256, 256, 3), 200, np.uint8), pixel_size=(0.5, 0.5))
    crafted_geojson(tmp_path / "objects.geojson", "cell")
    make_viewer(tmp_path / "image.ome.tif", tmp_path / "view.html", tmp_path / "files",
                objects=[(tmp_path / "objects.geojson", "o")], heatmaps=[(tmp_path / "p.ome.tif", "p")],
                options=ViewOptions(heatmap_opacity=0.7))
    data = json.loads((tmp_path / "view.html").read_text().split('id="dlhisto-viewer">')[1].split("</script>")[0])
    heat = [layer for layer in data["layers"] if layer["kind"] == "heatmap"]
    assert [(h["name"], h["scale"], h["opacity"], h["shown"]) for h in heat] == [
        ("p: channel 1", 2.0, 0.7, False), ("p: channel 2", 2.0, 0.7, False)]
    assert data["layers"][0]["shown"] is True
    shaded = tile(tmp_path / "files", "heatmap_1_1", 7, 0, 0, "png")
    assert shaded[:64, :, 3].min() == 255 and shaded[64:, :, 3].max() == 0


def test_the_command_runs_confined_and_reports_in_one_line(tmp_path):
    dlhisto = str(Path(sys.executable).parent / "dlhisto")
    done = subprocess.run([dlhisto, "view", str(DATA / "nuclei.tif"), "--page", str(tmp_path / "v.html"),
                           "--files-dir", str(tmp_path / "v_files")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "512 x 512 px in 10 zoom levels"
    assert (tmp_path / "v_files" / "tiles" / "openseadragon.min.js").stat().st_size > 300_000
    refused = subprocess.run([dlhisto, "view", str(DATA / "nuclei.tif"), "--objects", str(DATA / "nuclei.tif"),
                              "--page", str(tmp_path / "w.html"), "--files-dir", str(tmp_path / "w_files")],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("dlhisto view: error: 'nuclei.tif' is not UTF-8 text")


def test_fluorescence_is_stretched_between_percentiles_into_colour_channels(tmp_path):
    """A 16-bit image of two channels: each channel stretched between its 1st and 99.5th
    percentiles, shown as red and green."""
    y, x = np.mgrid[:300, :300]
    image = np.stack([x * 10, 4000 - y * 10], axis=-1).astype(np.uint16)
    write_image(tmp_path / "fluo.ome.tif", image, pixel_size=(0.3, 0.3))
    summary = make_viewer(tmp_path / "fluo.ome.tif", tmp_path / "view.html", tmp_path / "files")
    shown = tile(tmp_path / "files", "slide", summary.levels - 1, 0, 0).astype(int)
    assert summary.pixel_size == pytest.approx(0.3)
    assert shown[150, 5, 0] < 10 and shown[150, 295, 0] > 245 and shown[5, 150, 1] > 245 and shown[295, 150, 1] < 10
    assert np.abs(shown[..., 2]).max() < 12  # no third channel: blue stays dark (JPEG's chroma)

"""The HTML report of dlhisto evaluate, rendered by headless Chromium: its numbers are the table's."""

import csv
import os
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from dlhisto_core.cli import main
from dlhisto_core.io.images import read_labels
from dlhisto_core.io.writers import write_labels
from dlhisto_core.evaluation.report import COLOURS

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM and not os.environ.get("DLHISTO_BROWSER_REQUIRED"),
                                reason="needs Debian's chromium (the test command installs it)")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser(tmp_path, page, *options):
    """Run headless Chromium on a local page; its standard output."""
    done = subprocess.run([CHROMIUM or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           *options, page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


class RenderedText(HTMLParser):
    """Cells of each table (by id) and the texts of the SVG groups (by id) of a rendered page."""

    def __init__(self):
        super().__init__()
        self.tables, self.svg_texts, self._table, self._row, self._cell, self._group = {}, {}, None, None, None, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "g":
            self._group.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._table = self._row = None
        elif tag == "g" and self._group:
            self._group.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif self._group and self._group[-1] and data.strip():
            self.svg_texts[self._group[-1]] = data.strip()


def rendered(tmp_path, page) -> RenderedText:
    parser = RenderedText()
    parser.feed(browser(tmp_path, page, "--dump-dom"))
    return parser


def screenshot(tmp_path, page) -> np.ndarray:
    browser(tmp_path, page, "--window-size=1200,2400", f"--screenshot={tmp_path / 'page.png'}")
    return np.asarray(Image.open(tmp_path / "page.png").convert("RGB"))


def read_tsv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh, delimiter="\t"))


def shows_colour(picture, colour) -> int:
    return int(np.all(np.abs(picture.astype(int) - colour) <= 8, axis=-1).sum())


def test_instance_report_renders_the_numbers_of_the_table(test_data, tmp_path):
    table, page = tmp_path / "scores.tsv", tmp_path / "report.html"
    assert main(["evaluate", "--truth", str(test_data / "nuclei_groundtruth.tif"),
                 "--prediction", str(test_data / "nuclei_labels.tif"), "--image", str(test_data / "nuclei.tif"),
                 "--table", str(table), "--report", str(page)]) == 0
    tsv = read_tsv(table)
    pooled_tsv = [row[1:] for row in tsv if row[0] == "all"]
    shown = rendered(tmp_path, page)
    assert shown.tables["pooled"][0] == tsv[0][1:]  # same columns, without 'image'
    assert shown.tables["pooled"][1:] == pooled_tsv  # every number, as written in the table
    assert shown.tables["pooled"][1][:4] == ["0.5", "74", "38", "51"]
    picture = screenshot(tmp_path, page)
    # the picture of the errors is drawn: outlines of matches, false positives and misses
    assert all(shows_colour(picture, colour) > 100 for colour in COLOURS.values())
    assert (picture < 250).any(axis=-1).mean() > 0.1  # not a blank page


def test_class_report_confusion_matrix_matches_the_confusion_table(test_data, tmp_path):
    classes = read_labels(test_data / "nuclei_classes.tif").data  # pixel classifier: 1 nucleus, 2 background
    write_labels(tmp_path / "foreground.tif", (classes == 1).astype("uint8"))
    confusion, page = tmp_path / "confusion.tsv", tmp_path / "report.html"
    assert main(["evaluate", "--mode", "semantic", "--truth", str(test_data / "nuclei_foreground.tif"),
                 "--prediction", str(tmp_path / "foreground.tif"), "--class-names", "background,nucleus",
                 "--table", str(tmp_path / "scores.tsv"), "--confusion", str(confusion), "--report", str(page)]) == 0
    counts = [row[1:] for row in read_tsv(confusion)[1:]]
    shown = rendered(tmp_path, page)
    drawn = [[shown.svg_texts[f"count-{i}-{j}"] for j in range(2)] for i in range(2)]
    assert drawn == counts and sum(int(c) for row in counts for c in row) == 512 * 512
    pooled = [row[1:] for row in read_tsv(tmp_path / "scores.tsv") if row[0] == "all"]
    assert [row[:len(shown.tables["pooled"][0])] for row in pooled] == shown.tables["pooled"][1:]
    assert shows_colour(screenshot(tmp_path, page), COLOURS["false positive"]) > 100


def test_classification_evaluation_of_classify_tables(test_data, tmp_path, capsys):
    predictions = tmp_path / "classify.tsv"
    predictions.write_text("image\tx\ty\twidth\theight\tclass\tp_H&E\tp_IHC\n"
                           "a.png\t0\t0\t64\t64\tH&E\t0.9\t0.1\nb.png\t0\t0\t64\t64\tIHC\t0.2\t0.8\n"
                           "c.png\t0\t0\t64\t64\tH&E\t0.6\t0.4\nd.png\t0\t0\t64\t64\tIHC\t0.3\t0.7\n")
    truth = tmp_path / "truth.tsv"
    truth.write_text("image\tclass\na.png\tH&E\nb.png\tIHC\nc.png\tIHC\nd.png\tIHC\n")
    page, table, confusion = tmp_path / "report.html", tmp_path / "scores.tsv", tmp_path / "confusion.tsv"
    assert main(["evaluate", "--mode", "classification", "--prediction", str(predictions), "--truth", str(truth),
                 "--table", str(table), "--confusion", str(confusion), "--report", str(page)]) == 0
    assert "4 images or tiles: accuracy 0.750, balanced accuracy 0.833" in capsys.readouterr().out
    rows = {r["class"]: r for r in csv.DictReader(table.open(), delimiter="\t")}
    assert (rows["H&E"]["precision"], rows["H&E"]["recall"], rows["IHC"]["recall"]) == ("0.5", "1", "0.666667")
    assert rows["all"]["f1"] == "0.733333"  # macro F1: (2/3 + 4/5) / 2
    assert read_tsv(confusion) == [["true class", "H&E", "IHC"], ["H&E", "1", "0"], ["IHC", "1", "2"]]
    shown = rendered(tmp_path, page)
    assert [[shown.svg_texts[f"count-{i}-{j}"] for j in range(2)] for i in range(2)] == [["1", "0"], ["1", "2"]]
    assert shown.tables["pooled"][1:] == [row for row in read_tsv(table)[1:]]
    truth.write_text("image\tclass\na.png\tH&E\n")
    assert main(["evaluate", "--mode", "classification", "--prediction", str(predictions), "--truth", str(truth),
                 "--table", str(tmp_path / "bad.tsv")]) == 2
    assert "no true class for image 'b.png'" in capsys.readouterr().err
    assert not (tmp_path / "bad.tsv").exists()


def test_a_truth_per_tile_scores_the_tiles_it_lists(tmp_path, capsys):
    """A slide annotated in places: the tiles of the classify table that the truth does not list
    are counted, not scored; a truth that lists none of them is refused."""
    predictions = tmp_path / "classify.tsv"
    predictions.write_text("image\tx\ty\twidth\theight\tclass\tp_stroma\tp_tumour\n"
                           "s.svs\t0\t0\t128\t128\ttumour\t0.1\t0.9\ns.svs\t128\t0\t128\t128\tstroma\t0.8\t0.2\n"
                           "s.svs\t0\t128\t128\t128\ttumour\t0.4\t0.6\n")
    truth = tmp_path / "truth.tsv"
    truth.write_text("image\tx\ty\tclass\ns.svs\t0\t0\ttumour\ns.svs\t0\t128\tstroma\n")
    table = tmp_path / "scores.tsv"
    assert main(["evaluate", "--mode", "classification", "--prediction", str(predictions), "--truth", str(truth),
                 "--table", str(table)]) == 0
    assert ("2 images or tiles: accuracy 0.500, balanced accuracy 0.500 (1 tiles without a true class not scored)"
            in capsys.readouterr().out)
    truth.write_text("image\tx\ty\tclass\nother.svs\t0\t0\ttumour\n")
    assert main(["evaluate", "--mode", "classification", "--prediction", str(predictions), "--truth", str(truth),
                 "--table", str(tmp_path / "none.tsv")]) == 2
    assert "no tile of the prediction tables has a true class in 'truth.tsv'" in capsys.readouterr().err
    assert not (tmp_path / "none.tsv").exists()

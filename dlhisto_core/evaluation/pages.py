"""Self-contained HTML pages of tables and plots (no scripts, no links out): the reports of
``evaluate`` and of the cohort step, for people who will not open a TSV.

Numbers in tables are formatted exactly as in the TSV outputs. Plots are inline SVG with their
text kept as text, so a browser (or a test) can read the numbers and names written in them.
"""

from __future__ import annotations

import html
import io
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless back end)

from .. import __version__  # noqa: E402
from ..io.outputs import atomic_output  # noqa: E402
from ..io.tables import format_value  # noqa: E402

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0 1.5em 1.5em 0; vertical-align: top; }
figcaption { font-size: 0.9em; max-width: 40em; }
.legend span { display: inline-block; width: 1em; height: 1em; margin: 0 0.3em 0 1em; vertical-align: middle; }
.meta { color: #666; font-size: 0.85em; }
"""


def write_page(path: str | os.PathLike, title: str, sections: Sequence[str], step: str) -> None:
    """The page, whole or not at all: a title, then the sections (HTML already escaped)."""
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(sections)
            + f"\n<p class=\"meta\">dlhisto {__version__} {html.escape(step)}</p></body></html>\n")
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(page)


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def table(rows: Sequence[dict], columns: Sequence[str], table_id: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def figure(content: str, caption: str) -> str:
    return f"<figure>{content}<figcaption>{caption}</figcaption></figure>"


def svg(fig) -> str:
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "dlhisto"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue and DOCTYPE: inline in the page

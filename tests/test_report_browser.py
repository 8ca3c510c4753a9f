"""The report as a reader meets it: opened in headless Chromium, every image decodes and every
SQL (and config) block expands when its summary is clicked."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import small_lake

from pipelines import report as rp

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=15000",
)
# runs after the page has loaded; writes what it found into a <pre> that --dump-dom prints
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const shown = el => (!el.checkVisibility || el.checkVisibility())
    && el.getBoundingClientRect().height > 0;
  const details = [...document.querySelectorAll('details')].map(d => {
    const s = d.querySelector('summary'), pre = d.querySelector('pre');
    const shut = !d.open && !shown(pre);
    s.click();
    const open = d.open && shown(pre) && pre.textContent.length > 0;
    return {summary: s.textContent, shut: shut, open: open};
  });
  const out = document.createElement('pre');
  out.id = 'karmic-probe';
  out.textContent = JSON.stringify({
    images: imgs.map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                            w: i.naturalWidth, h: i.naturalHeight})),
    details: details,
  });
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    env = os.environ.get("KARMIC_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def probe(page: Path, tmp: Path) -> dict:
    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set KARMIC_CHROMIUM)")
    probed = tmp / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    res = subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    m = re.search(r'<pre id="karmic-probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"chromium exit {res.returncode}, no probe output: {res.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def test_report_in_headless_chromium(tmp_path: Path) -> None:
    lake = small_lake(tmp_path / "lake", seeds=2, episodes=4)
    index = rp.make_report(lake, tmp_path / "report")
    seen = probe(index, tmp_path)
    page = index.read_text()
    assert len(seen["images"]) == page.count("<img ") == 5
    for img in seen["images"]:
        assert img["ok"] and img["w"] > 300 and img["h"] > 200, img
    n_sql = page.count("<summary>SQL: ")
    assert n_sql >= 5 and len(seen["details"]) == page.count("<details>")
    for d in seen["details"]:
        assert d["shut"] and d["open"], d  # closed until clicked, then its text shows
    assert sum(d["summary"].startswith("SQL: ") for d in seen["details"]) == n_sql


def test_the_probe_sees_a_broken_image_and_a_block_that_does_not_open(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><body><img alt='bad' src='data:image/png;base64,iVBORw0KGgoAAAAN'>"
        "<details><summary>SQL: x</summary><pre></pre></details></body></html>"
    )
    seen = probe(page, tmp_path)
    assert [i["ok"] for i in seen["images"]] == [False]
    assert [d["open"] for d in seen["details"]] == [False]  # nothing to show


def test_a_small_lake_report_in_headless_chromium(tmp_path: Path) -> None:
    """Issue 36: one grid size, single-bin runs and a scripted simulation: every figure decodes,
    no table of dashes, no float noise for 0 (the figures themselves: test_report_small_lake.py)."""
    from test_report_small_lake import small_lake as one_grid_lake

    index = rp.make_report(one_grid_lake(tmp_path / "lake"), tmp_path / "report")
    seen = probe(index, tmp_path)
    page = index.read_text()
    assert len(seen["images"]) == page.count("<img ") == 5
    for img in seen["images"]:
        assert img["ok"] and img["w"] > 300 and img["h"] > 200, img
    scale = page.split("<h2>Scale comparison table</h2>", 1)[1].split("<h2>", 1)[0]
    assert "No 30x30 runs in this lake" in scale and "<table" not in scale  # a sentence, not dashes
    assert "e-17" not in page and "e-16" not in page
    assert all(d["shut"] and d["open"] for d in seen["details"])


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not (ROOT / "results" / "ablation" / "report.md").is_file(), reason="no results/ablation")
def test_the_ablation_reports_figures_in_headless_chromium(tmp_path: Path) -> None:
    """Every figure results/ablation/report.md shows decodes in a browser at a readable size."""
    folder = ROOT / "results" / "ablation"
    names = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (folder / "report.md").read_text())
    assert names
    page = tmp_path / "figures.html"
    page.write_text("<!doctype html><html><body>" + "".join(
        f"<img alt='{html.escape(n)}' src='{(folder / n).as_uri()}'>" for n in names) + "</body></html>")
    seen = probe(page, tmp_path)
    assert [i["alt"] for i in seen["images"]] == names
    for img in seen["images"]:
        assert img["ok"], img
        if img["alt"].endswith(".png"):  # the figures; the episode GIFs are the replay's size
            assert img["w"] >= 300 and img["h"] >= 200, img

"""The documentation site: the strict MkDocs build, the pages generated from the code (CLI
reference, results, metrics), the environment's docstring as its spec, and the built site as a
reader meets it in headless Chromium (front page, a results page with its figures, the CLI
reference: no broken image)."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDIES = sorted(p.parent.name for p in (ROOT / "results").glob("*/report.md"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once per module with `mkdocs build --strict` (a broken link, anchor or nav
    entry fails it); skipped where mkdocs and its Material theme are not installed."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (the dev extra has it)")
    pytest.importorskip(
        "material", reason="mkdocs-material is not installed (the dev extra has it)"
    )
    out = tmp_path_factory.mktemp("site")
    env = dict(
        os.environ,
        NO_MKDOCS_2_WARNING="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert res.returncode == 0, f"strict build failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return out


def test_the_strict_build_makes_every_page_of_the_nav(site: Path) -> None:
    import yaml

    # mkdocs.yml's !!python tags are not used, so the safe loader reads it
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    for page in pages(config["nav"]):
        built = site / (
            page[: -len(".md")] + "/index.html"
            if not page.endswith("index.md")
            else page[: -len(".md")] + ".html"
        )
        assert built.exists(), page
    for study in STUDIES:
        assert (site / "results" / study / "index.html").exists(), study


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def _local_images(page: Path) -> list[Path]:
    parser = _Images()
    parser.feed(page.read_text())
    out = []
    for src in parser.srcs:
        url = urlparse(src)
        assert not url.scheme or url.scheme == "data", f"{page}: remote image {src}"
        if not url.scheme:
            out.append((page.parent / unquote(url.path)).resolve())
    return out


def test_every_image_of_every_page_is_in_the_site(site: Path) -> None:
    seen = 0
    for page in site.rglob("*.html"):
        for img in _local_images(page):
            assert img.is_file(), f"{page.relative_to(site)}: {img} is missing"
            seen += 1
    # the front page's GIF and every study's figures
    assert seen >= 1 + sum(len(list((ROOT / "results" / s).glob("fig_*.png"))) for s in STUDIES)


def test_results_pages_are_the_committed_reports_with_their_figures(site: Path) -> None:
    for study in STUDIES:
        page = (site / "results" / study / "index.html").read_text()
        figures = sorted(p.name for p in (ROOT / "results" / study).glob("fig_*.png"))
        assert figures, study
        for fig in figures:
            assert f'src="{fig}"' in page, (study, fig)
            assert (site / "results" / study / fig).read_bytes() == (
                ROOT / "results" / study / fig
            ).read_bytes()
        verdicts = json.loads((ROOT / "results" / study / "verdicts.json").read_text())
        ids = [v["id"] for v in verdicts["predictions"]]
        assert ids, study
        for pid in ids:
            assert pid in page, (study, pid)


def test_the_cli_reference_names_every_command_and_option() -> None:
    import typer

    from karmic.cli import app
    from karmic.clidoc import cli_markdown

    text = cli_markdown(app)

    def walk(cmd, path):
        yield path, cmd
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])

    n = 0
    for path, cmd in walk(typer.main.get_command(app), ["karmic"]):
        if len(path) > 1:
            assert f"`{' '.join(path)}`" in text, path
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            name = param.opts[0] if param.param_type_name == "option" else param.name.upper()
            assert name in text, (path, name)
            n += 1
    assert n > 50  # the whole tree was walked


def test_the_cli_reference_page_is_built(site: Path) -> None:
    page = (site / "cli" / "index.html").read_text()
    for command in ("karmic simulate", "karmic train", "karmic study run", "karmic verify tvt"):
        assert command in page, command
    assert "--total-steps" in page


def test_the_metrics_page_lists_every_query_file_and_study_metric(site: Path) -> None:
    from pipelines.study import METRICS

    page = (site / "metrics" / "index.html").read_text()
    for sql in (ROOT / "queries").rglob("*.sql"):
        assert sql.relative_to(ROOT).as_posix() in page, sql
    for metric in METRICS:
        assert metric in page, metric


def test_the_environment_docstring_is_its_spec() -> None:
    from karmic.envs import harvest_v0
    from karmic.envs.config import PRESETS, HarvestConfig

    doc = harvest_v0.__doc__
    for preset in PRESETS:
        assert f"``{preset}``" in doc, f"preset {preset} missing from harvest_v0's docstring"
    for field in fields(HarvestConfig):
        assert f"``{field.name}``" in doc, (
            f"option {field.name} missing from harvest_v0's docstring"
        )
    for mode in harvest_v0.raw_env.metadata["render_modes"]:
        assert f'"{mode}"' in doc, mode
    assert "Version history" in doc and "v0: first release" not in doc


# --- the built site in headless Chromium --------------------------------------------------------

PROBE = """<script>
window.addEventListener('load', () => {
  const out = document.createElement('pre');
  out.id = 'karmic-probe';
  out.textContent = JSON.stringify({
    title: document.title,
    text: document.body.innerText.length,
    images: [...document.images].map(i => ({src: i.getAttribute('src'),
      ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, h: i.naturalHeight})),
  });
  document.body.appendChild(out);
});
</script>"""


def _probe(page: Path, tmp: Path) -> dict:
    from test_report_browser import FLAGS, chromium

    exe = chromium()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set KARMIC_CHROMIUM)")
    # the probed copy sits beside the page, so its relative links resolve as the page's do
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    res = subprocess.run(
        [exe, *FLAGS, f"--user-data-dir={tmp / 'profile'}", "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r'<pre id="karmic-probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"chromium exit {res.returncode}, no probe output: {res.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.parametrize(
    "page, min_images",
    [
        ("index.html", 1),  # the front page and its GIF
        ("results/ablation/index.html", 7),  # a results page: its figures and episode GIFs
        ("cli/index.html", 0),  # the CLI reference
    ],
)
def test_the_site_in_headless_chromium(
    site: Path, tmp_path: Path, page: str, min_images: int
) -> None:
    seen = _probe(site / page, tmp_path)
    assert "Karmic-RL" in seen["title"] and seen["text"] > 500, seen["title"]
    assert len(seen["images"]) >= min_images, seen["images"]
    for img in seen["images"]:
        assert img["ok"] and img["w"] > 0 and img["h"] > 0, img


def test_the_probe_sees_a_broken_image(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><head><title>Karmic-RL</title></head><body>"
        "<img src='missing.png'></body></html>"
    )
    seen = _probe(page, tmp_path)
    assert [i["ok"] for i in seen["images"]] == [False]

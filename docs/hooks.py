"""MkDocs hooks (mkdocs.yml `hooks:`): the pages generated from the repository at build time.

- `index.md`: the front page, README.md with its links made the site's (one text, no drift).
- `cli.md`: the CLI reference, from the typer app's command tree (karmic/clidoc.py).
- `results/index.md` and `results/<study>/index.md`: one page per committed study, its
  `results/<study>/report.md` as written by `karmic study report`, with its figures and episode
  GIFs served beside it (the report's relative image links resolve unchanged); the Results
  section of the nav lists every study found.

Nothing is written into the work tree and nothing is downloaded: the files are virtual
(`File.generated`), so a fresh clone builds the same site.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
ASSETS = (".png", ".gif", ".svg", ".jpg")


def studies() -> list[str]:
    """Every study with a committed report, in name order."""
    return sorted(p.parent.name for p in RESULTS.glob("*/report.md"))


def _summary(report: str) -> str:
    """The report's first paragraph after its title (the study's question)."""
    paragraphs = [p.strip() for p in report.split("\n\n") if p.strip()]
    body = [p for p in paragraphs if not p.startswith("#")]
    return " ".join(body[0].split()) if body else ""


def results_index() -> str:
    lines = [
        "# Results\n",
        "One page per pre-registered study, generated at build time from the committed "
        "`results/<study>/report.md` that `karmic study report` wrote (verdicts with Holm-adjusted "
        "p-values, late-window cell tables, learning curves, episode GIFs, the commands that "
        "reproduce it). `karmic study report NAME --from-results` rebuilds each from "
        "`results/NAME/` alone.\n",
        "| study | question |",
        "|---|---|",
    ]
    for name in studies():
        summary = _summary((RESULTS / name / "report.md").read_text())
        lines.append(f"| [{name}]({name}/index.md) | {summary.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def study_page(name: str) -> str:
    """The study's report.md; a READING.md beside it (a later correction of how to read the
    report, which itself stays as computed) goes first, under the report's title."""
    folder = RESULTS / name
    report = (folder / "report.md").read_text()
    reading = folder / "READING.md"
    if not reading.exists():
        return report
    title, _, rest = report.partition("\n")
    note = reading.read_text().strip()
    if note.startswith("# "):
        note = "#" + note
    return f"{title}\n\n{note}\n\n## The report as computed\n{rest}"


def on_config(config):
    # fill the nav's Results section with every study found
    for item in config["nav"] or []:
        if isinstance(item, dict) and "Results" in item:
            item["Results"] = [{"Overview": "results/index.md"}] + [
                {name: f"results/{name}/index.md"} for name in studies()
            ]
    return config


def home_page() -> str:
    """The site's front page: README.md with its links turned into the site's."""
    # the usage block's info string ("bash usage", which tests/test_readme.py finds) is GitHub's;
    # superfences wants a bare language
    text = (ROOT / "README.md").read_text().replace("```bash usage\n", "```bash\n")
    text = re.sub(r"\]\(docs/", "](", text)
    text = re.sub(r"\]\(results/([\w.-]+)/(report|READING)\.md\)", r"](results/\1/index.md)", text)
    text = text.replace("the site's CLI reference", "the [CLI reference](cli.md)")
    return text.replace("| CLI reference |", "| [CLI reference](cli.md) |").replace(
        "| results |", "| [results](results/index.md) |"
    )


def on_files(files, config):
    from karmic.cli import app
    from karmic.clidoc import cli_markdown

    files.append(File.generated(config, "index.md", content=home_page()))
    files.append(File.generated(config, "cli.md", content=cli_markdown(app)))
    files.append(File.generated(config, "results/index.md", content=results_index()))
    for name in studies():
        folder = RESULTS / name
        files.append(File.generated(config, f"results/{name}/index.md", content=study_page(name)))
        for asset in sorted(folder.iterdir()):
            if asset.suffix.lower() in ASSETS:
                files.append(
                    File.generated(config, f"results/{name}/{asset.name}", abs_src_path=str(asset))
                )
    return files


def _sql_header(path: Path) -> str:
    """A query file's leading `--` comment block, as one line."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("--"):
            break
        out.append(line[2:].strip())
    return " ".join(" ".join(out).split())


def query_table() -> str:
    rows = ["| file | what it defines |", "|---|---|"]
    for path in sorted((ROOT / "queries").rglob("*.sql")):
        rel = path.relative_to(ROOT).as_posix()
        rows.append(f"| `{rel}` | {_sql_header(path).replace('|', '/')} |")
    return "\n".join(rows)


def study_metric_table() -> str:
    from pipelines.study import METRICS

    rows = ["| metric | definition |", "|---|---|"]
    rows += [f"| `{name}` | {text} |" for name, text in METRICS.items()]
    return "\n".join(rows)


LIST_ITEM = re.compile(r"^(?:[-*+]|\d+\.) ")


def loosen_lists(markdown: str) -> str:
    """A blank line before each list that follows a line of text, outside code fences: GitHub
    starts a list there, Python-Markdown (MkDocs) would run it into the paragraph."""
    out: list[str] = []
    fence = None
    for line in markdown.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
            fence = None if fence == marker else (fence or marker)
        elif fence is None and LIST_ITEM.match(line) and out:
            prev = out[-1]
            if (
                prev.strip()
                and not LIST_ITEM.match(prev)
                and not prev.startswith((" ", "\t", "|", "#"))
            ):
                out.append("")
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    markdown = loosen_lists(markdown)
    if page.file.src_uri == "metrics.md":
        markdown = markdown.replace("<!-- generated: query files -->", query_table())
        markdown = markdown.replace("<!-- generated: study metrics -->", study_metric_table())
    return markdown

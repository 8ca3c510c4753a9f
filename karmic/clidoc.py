"""The CLI reference as Markdown, generated from the typer app's command tree (docs/cli.md).

Nothing here is written by hand: `docs/hooks.py` calls :func:`cli_markdown` on ``karmic.cli.app``
at every ``mkdocs build``, so the reference cannot drift from the options the code accepts
(`tests/test_docs.py` checks that every command and option appears). Only duck-typed attributes
of click's command objects are used (typer vendors its own copy of click).
"""

from __future__ import annotations


def _command_tree(app):
    import typer

    return typer.main.get_command(app)


def _cell(text: str) -> str:
    """One Markdown table cell: no pipes, no newlines."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _section(cmd, path: list[str], parent_ctx, out: list[str]) -> None:
    ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent_ctx)
    depth = len(path)
    title = " ".join(path)
    out.append(f"{'#' * min(depth, 4)} `{title}`\n")
    help_text = (cmd.help or "").strip()
    if help_text:
        # typer's rich markup uses \b for verbatim blocks; Markdown needs none of it
        out.append(help_text.replace("\b\n", "").replace("\b", "") + "\n")
    pieces = cmd.collect_usage_pieces(ctx)
    out.append(f"```text\n{' '.join(path)} {' '.join(pieces)}\n```\n")
    rows = []
    for param in cmd.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(ctx)
        if param.param_type_name == "argument":
            name = f"`{param.name.upper()}`"
            desc = getattr(param, "help", None) or ""
            if param.required:
                desc = (desc + " (required)").strip()
        elif record is None:
            continue
        else:
            name = f"`{record[0]}`"
            desc = record[1]
        rows.append(f"| {_cell(name)} | {_cell(desc)} |")
    if rows:
        out.append("| argument / option | meaning |\n|---|---|")
        out.append("\n".join(rows) + "\n")
    subcommands = getattr(cmd, "commands", None)
    if subcommands:
        for name in cmd.list_commands(ctx):
            _section(subcommands[name], [*path, name], ctx, out)


def cli_markdown(app, prog: str = "karmic") -> str:
    """The whole reference: one section per command (groups' subcommands nested), each with its
    help text, usage line and a table of its arguments and options with their defaults."""
    root = _command_tree(app)
    out = [
        "# CLI reference\n",
        "Generated from the code at every `mkdocs build` (`karmic/clidoc.py` walks `karmic.cli`'s "
        "command tree), so it lists exactly what the installed `karmic` accepts. "
        "`karmic COMMAND --help` prints the same.\n",
    ]
    ctx = root.context_class(root, info_name=prog)
    if root.help:
        out.append(root.help.strip() + "\n")
    own = [p for p in root.params if p.param_type_name == "option" and not getattr(p, "hidden", False)]
    if own:  # `karmic --version`
        out.append("Options of `karmic` itself: "
                   + "; ".join(f"`{p.opts[0]}`: {p.help}" for p in own if p.opts[0] != "--help") + "\n")
    for name in root.list_commands(ctx):
        _section(root.commands[name], [prog, name], ctx, out)
    return "\n".join(out)

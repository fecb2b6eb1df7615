"""A one-page HTML report: the settings, the table and the charts (embedded, so the file stands alone)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tritonrepo.bench.results import BenchResult
from tritonrepo.bench.table import COLUMNS, RATIOS

_STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;margin:1em 0}code{background:#f3f3f3;padding:1px 4px}"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(result: BenchResult, plots: list[Path], comparison: list[dict] | None = None) -> str:
    settings = ", ".join(f"{key} {value}" for key, value in result.settings.items())
    hardware = result.hardware.get("description", "unknown")
    tools = ", ".join(f"{name} {version}" for name, version in result.tools.items())
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>tritonrepo bench: {html.escape(result.model)}"
        f"</title><style>{_STYLE}</style></head><body>",
        f"<h1>tritonrepo bench: {html.escape(result.model)}</h1>",
        f"<p>Endpoint <code>{html.escape(result.openai_url)}</code>, started {html.escape(result.started)}"
        f"{' (interrupted: the levels that finished)' if result.interrupted else ''}.<br>"
        f"Settings: {html.escape(settings)}.<br>Hardware: {html.escape(hardware)}.<br>Tools: {html.escape(tools)}.</p>",
        _table([name for name, _ in COLUMNS], [[cell(level) for _, cell in COLUMNS] for level in result.levels]),
    ]
    if comparison:
        header = ["conc", *(name for name, _, _ in RATIOS)]
        rows = [[str(r["concurrency"]), *("n/a" if r[n] is None else f"{r[n]:.2f}x" for n, _, _ in RATIOS)]
                for r in comparison]  # fmt: skip
        parts += ["<h2>Against the earlier run (this / earlier)</h2>", _table(header, rows)]
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode()
        parts.append(f"<img alt='{html.escape(plot.stem)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)

"""The terminal views of a sweep: one row per concurrency level, and the ratios against an earlier run."""

from __future__ import annotations

from tritonrepo.bench.results import BenchResult, LevelResult

COLUMNS = (
    ("conc", lambda r: f"{r.concurrency}"),
    ("req/s", lambda r: f"{r.requests_per_s:.2f}"),
    ("out tok/s", lambda r: f"{r.output_tokens_per_s:.1f}"),
    ("tok/s/user", lambda r: f"{r.output_tokens_per_s_per_user:.1f}"),
    ("TTFT p50/p90/p99 ms", lambda r: f"{r.ttft_ms.p50:.1f} / {r.ttft_ms.p90:.1f} / {r.ttft_ms.p99:.1f}"),
    ("ITL p50/p90/p99 ms", lambda r: f"{r.itl_ms.p50:.2f} / {r.itl_ms.p90:.2f} / {r.itl_ms.p99:.2f}"),
    ("e2e p50/p99 ms", lambda r: f"{r.latency_ms.p50:.0f} / {r.latency_ms.p99:.0f}"),
    ("requests", lambda r: f"{r.requests}"),
    ("errors", lambda r: f"{r.errors}"),
)


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def format_table(result: BenchResult) -> str:
    header = [name for name, _ in COLUMNS]
    rows = [[cell(level) for _, cell in COLUMNS] for level in result.levels]
    title = f"{result.model} at {result.openai_url}: {result.settings.get('input_len')} tokens in, " + (
        f"{result.settings.get('output_len')} out, {'streaming' if result.settings.get('stream') else 'not streaming'}"
    )
    return f"{title}\n{_grid(header, rows)}"


# (name, value, True when larger is better)
RATIOS = (
    ("req/s", lambda r: r.requests_per_s, True),
    ("out tok/s", lambda r: r.output_tokens_per_s, True),
    ("tok/s/user", lambda r: r.output_tokens_per_s_per_user, True),
    ("TTFT p50", lambda r: r.ttft_ms.p50, False),
    ("TTFT p99", lambda r: r.ttft_ms.p99, False),
    ("ITL p50", lambda r: r.itl_ms.p50, False),
    ("ITL p99", lambda r: r.itl_ms.p99, False),
)


def ratio(new: float, old: float) -> float | None:
    return new / old if old > 0 else None


def compare(new: BenchResult, old: BenchResult) -> list[dict]:
    """new / old per metric at each concurrency both runs measured."""
    before: dict[int, LevelResult] = {level.concurrency: level for level in old.levels}
    rows = []
    for level in new.levels:
        if level.concurrency in before:
            row = {"concurrency": level.concurrency}
            row.update({name: ratio(value(level), value(before[level.concurrency])) for name, value, _ in RATIOS})
            rows.append(row)
    return rows


LOAD = (("model", "model"), ("input_len", "--input-len"), ("output_len", "--output-len"), ("stream", "--stream"))


def load_differences(new: BenchResult, old: BenchResult) -> list[str]:
    """What makes two runs' loads unlike (the model, the lengths, streaming): their ratios then compare unlike work."""
    found = []
    for key, name in LOAD:
        here = new.model if key == "model" else new.settings.get(key)
        there = old.model if key == "model" else old.settings.get(key)
        if here != there:
            found.append(f"{name} {here} here, {there} there")
    return found


def format_comparison(rows: list[dict], old_label: str, differences: list[str] | None = None) -> str:
    if not rows:
        return f"No concurrency level in common with {old_label}: nothing to compare."
    header = ["conc", *(name for name, _, _ in RATIOS)]
    cells = [[str(row["concurrency"]), *(_times(row[name]) for name, _, _ in RATIOS)] for row in rows]
    note = "this run / the earlier one (throughput: above 1x is better; latency: below 1x is better)"
    warning = ""
    if differences:
        warning = f"\nNote: the runs' loads differ ({'; '.join(differences)}): the ratios compare unlike work."
    return f"Against {old_label}: {note}\n{_grid(header, cells)}{warning}"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"

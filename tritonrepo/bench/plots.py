"""The sweep as PNG charts (matplotlib, no display needed): throughput, TTFT and ITL against concurrency, and the
throughput/latency trade-off (tokens/s per user against tokens/s in total)."""

from __future__ import annotations

from pathlib import Path

from tritonrepo.bench.aiperf_runner import INSTALL
from tritonrepo.bench.results import BenchResult
from tritonrepo.errors import BenchToolMissingError

SIZE_IN = (8.0, 5.0)
DPI = 100  # 800 x 500 pixels
PLOTS = ("throughput.png", "latency.png", "tradeoff.png")


def require_matplotlib() -> None:
    """Before a sweep starts, not after it ran: the charts need matplotlib (the [bench] extra's other half)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise BenchToolMissingError(
            "matplotlib, which draws the charts of `tritonrepo bench`, is not installed.", hint=f"Install it: {INSTALL}"
        ) from None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _runs(result: BenchResult, earlier: BenchResult | None) -> list[tuple[str, BenchResult, str]]:
    runs = [("this run", result, "-")]
    if earlier is not None and earlier.levels:
        runs.append((f"earlier ({earlier.started[:16]})", earlier, "--"))
    return runs


def _concurrency_axis(axis, result: BenchResult) -> None:
    levels = [level.concurrency for level in result.levels]
    if levels and max(levels) / min(levels) >= 8:
        axis.set_xscale("log", base=2)
    axis.set_xticks(levels, [str(c) for c in levels])
    axis.set_xlabel("concurrency (requests in flight)")
    axis.grid(True, alpha=0.3)


def _title(result: BenchResult) -> str:
    settings = result.settings
    return f"{result.model}: {settings.get('input_len')} tokens in, {settings.get('output_len')} out"


def _finish_panel(axis, result: BenchResult, label: str, *, title: str | None = None, legend: bool) -> None:
    """A panel against concurrency: axes labelled, y from 0 with room above the highest point."""
    _concurrency_axis(axis, result)
    axis.set_ylabel(label)
    axis.set_ylim(bottom=0, top=axis.get_ylim()[1] * 1.1)
    axis.set_title(title or label[0].upper() + label[1:])
    if legend:
        axis.legend(fontsize=8)


def _save(plt, figure, path: Path, title: str | None = None) -> None:
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_throughput(result: BenchResult, path: Path, earlier: BenchResult | None = None) -> None:
    plt = _pyplot()
    figure, (tokens, requests) = plt.subplots(1, 2, figsize=SIZE_IN, dpi=DPI)
    # Two panels, not twin axes: with fixed output lengths the two curves have the same shape and would hide each other.
    for label, run, style in _runs(result, earlier):
        x = [level.concurrency for level in run.levels]
        tokens.plot(x, [lv.output_tokens_per_s for lv in run.levels], style, marker="o", color="tab:blue", label=label)
        requests.plot(x, [lv.requests_per_s for lv in run.levels], style, marker="s", color="tab:orange", label=label)
    _finish_panel(tokens, result, "output tokens/s (all users)", legend=earlier is not None)
    _finish_panel(requests, result, "requests/s", legend=earlier is not None)
    _save(plt, figure, path, f"Throughput against concurrency, {_title(result)}")


def plot_latency(result: BenchResult, path: Path, earlier: BenchResult | None = None) -> None:
    plt = _pyplot()
    figure, (ttft, itl) = plt.subplots(1, 2, figsize=SIZE_IN, dpi=DPI)
    colors = {"p50": "tab:green", "p90": "tab:orange", "p99": "tab:red"}
    for axis, metric, name in ((ttft, "ttft_ms", "time to first token"), (itl, "itl_ms", "inter-token latency")):
        for label, run, style in _runs(result, earlier):
            x = [level.concurrency for level in run.levels]
            for key, color in colors.items():
                y = [getattr(getattr(level, metric), key) for level in run.levels]
                suffix = "" if label == "this run" else f", {label}"
                axis.plot(x, y, style, marker="o", color=color, label=f"{key}{suffix}")
        _finish_panel(axis, result, f"{name} (ms)", title=name.capitalize(), legend=True)
    _save(plt, figure, path, f"Latency percentiles against concurrency, {_title(result)}")


def plot_tradeoff(result: BenchResult, path: Path, earlier: BenchResult | None = None) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    for label, run, style in _runs(result, earlier):
        x = [level.output_tokens_per_s for level in run.levels]
        y = [level.output_tokens_per_s_per_user for level in run.levels]
        axis.plot(x, y, style, marker="o", label=label)
        for level in run.levels:
            axis.annotate(f"c={level.concurrency}", (level.output_tokens_per_s, level.output_tokens_per_s_per_user),
                          textcoords="offset points", xytext=(5, 5), fontsize=9)  # fmt: skip
    axis.set_xlabel("output tokens/s, all users together")
    axis.set_ylabel("output tokens/s per user (1 / inter-token latency)")
    axis.set_xlim(left=0, right=axis.get_xlim()[1] * 1.12)  # room for the labels of the points
    axis.set_ylim(bottom=0, top=axis.get_ylim()[1] * 1.12)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=9)
    axis.set_title(f"Throughput against speed per user (c = concurrency)\n{_title(result)}")
    _save(plt, figure, path)


def write_plots(result: BenchResult, folder: Path, earlier: BenchResult | None = None) -> list[Path]:
    """The three PNGs in `folder`; none when no level finished."""
    if not result.levels:
        return []
    paths = [folder / name for name in PLOTS]
    for draw, path in zip((plot_throughput, plot_latency, plot_tradeoff), paths, strict=True):
        draw(result, path, earlier)
    return paths

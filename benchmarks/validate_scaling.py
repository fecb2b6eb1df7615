"""Time `validate_repository` on configs with many parameters and on one huge string; prints a markdown table.

Each case runs in its own Python process, which reports its own peak memory (VmHWM, the whole process: interpreter and
imports included); it is killed after --timeout seconds (the quadratic validator took minutes). Run it from the checkout whose validator you want to time:
`PYTHONPATH=$PWD python benchmarks/validate_scaling.py`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import sys, time
from pathlib import Path
import tritonrepo.repository.validate as validate
started = time.perf_counter()
problems = validate.validate_repository(Path(sys.argv[1]))
seconds = time.perf_counter() - started
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(f"{seconds:.3f} {int(peak) // 1024} {len(problems)}")
for problem in problems[:3]:
    print(problem, file=sys.stderr)
"""

HEADER = """\
name: "many"
backend: "python"
max_batch_size: 8
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def parameters_repository(root: Path, count: int) -> Path:
    """One Python model whose config has `count` parameters, each written over four lines as upstream does."""
    lines = [HEADER]
    for index in range(count):
        lines.append(f'parameters {{\n  key: "setting_{index}"\n  value: {{ string_value: "value {index}" }}\n}}\n')
    return _write(root, "".join(lines))


def huge_string_repository(root: Path, megabytes: int) -> Path:
    """One Python model whose config holds a single string parameter of `megabytes` MB on one line."""
    value = "x" * (megabytes * 1_000_000)
    return _write(root, HEADER + f'parameters {{ key: "blob" value: {{ string_value: "{value}" }} }}\n')


def _write(root: Path, config: str) -> Path:
    model = root / "many"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    (model / "config.pbtxt").write_text(config)
    return root


def measure(repository: Path, timeout: float) -> tuple[str, str, str]:
    """(seconds, peak memory, problems) of one validation in a fresh process."""
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(repository)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    started = time.monotonic()
    while True:
        pid, status, _ = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - started > timeout:
            process.send_signal(signal.SIGKILL)
            os.wait4(process.pid, 0)
            return f"> {timeout:.0f} (killed)", "-", "-"
        time.sleep(0.05)
    out, err = process.stdout.read(), process.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        return "failed", "-", err.strip().splitlines()[-1] if err.strip() else "?"
    seconds, peak_mb, problems = out.split()
    detail = problems if problems == "0" else f"{problems}: {err.strip().splitlines()[0][:90]}"
    return seconds, f"{peak_mb} MB", detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", type=int, nargs="*", default=[1000, 8000])
    parser.add_argument("--string-mb", type=int, nargs="*", default=[50])
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a case is killed")
    args = parser.parse_args()
    cases = [(f"{n:,} parameters", parameters_repository, n) for n in args.parameters]
    cases += [(f"one {mb} MB string", huge_string_repository, mb) for mb in args.string_mb]
    print("| config | config size | seconds | peak memory | problems |")
    print("|---|---:|---:|---:|---|")
    for label, make, size in cases:
        with tempfile.TemporaryDirectory(prefix="validate-scaling-") as temp:
            repository = make(Path(temp), size)
            config_bytes = (repository / "many" / "config.pbtxt").stat().st_size
            seconds, memory, problems = measure(repository, args.timeout)
            print(f"| {label} | {config_bytes / 1e6:.2f} MB | {seconds} | {memory} | {problems} |", flush=True)


if __name__ == "__main__":
    main()

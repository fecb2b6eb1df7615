#!/usr/bin/env python3
"""Check that every third-party module tritonrepo imports is a declared dependency where it is needed, and imports.

    python .ci/check_imports.py [--root DIR] [--pyproject FILE] [--no-import] [--cli PATH/TO/tritonrepo]

Run it with the interpreter of an install WITHOUT the test extra (`pip install ".[all]"`; `make check-install`). For
each import in tritonrepo/ and all_models/ (found with ast, function-level imports included, `if TYPE_CHECKING:`
blocks aside) it finds the distribution that provides the module here and requires it to be declared directly: in
the base dependencies, or in the extra of the code's area (AREAS). Then it imports each module (--no-import skips
that). Modules only the NGC container provides are exempt. --cli also runs that install's `tritonrepo`: --help,
`smoke --help`, `models`, and a real `smoke` against closed ports, whose rows must fail for the network, never for a
missing module. Exit 1 with one line per problem."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# Areas whose imports an extra answers for, first match wins; everything else needs the base dependencies.
AREAS = (
    ("tritonrepo/frontend/", "frontend"),  # `tritonrepo serve`'s OpenAI front end
    ("tritonrepo/dynamo/", "dynamo"),  # serving on NVIDIA Dynamo (installed by .ci/install_dynamo.sh)
    ("tritonrepo/bench/", "bench"),  # `tritonrepo bench`: aiperf and matplotlib (installed by .ci/install_bench.sh)
    ("tritonrepo/source/tiny_llama.py", "runtime"),  # the embedded models are made with tokenizers + safetensors
    ("tritonrepo/source/scripted_llama.py", "runtime"),
    ("all_models/", "runtime"),  # Triton's Python models run in the serving environment: the portable runtime's
)
# In the NGC container (TensorRT-LLM) or inside tritonserver's Python stub; never installed by pip for this project.
CONTAINER_ONLY = {"tensorrt_llm", "tensorrt", "triton_python_backend_utils"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> tuple[str, list[str]]:
    """('tritonclient', ['grpc', 'http']) for 'tritonclient[grpc,http]>=2.50'."""
    name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
    extras = re.search(r"\[([^\]]*)\]", requirement.split(";")[0])
    return normalize(name), [e.strip() for e in extras[1].split(",")] if extras else []


def declared(pyproject: Path) -> tuple[str, set[str], dict[str, set[str]]]:
    """The project's name, its base dependencies and each extra's (self-references resolved)."""
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    own = normalize(project["name"])
    raw = project.get("optional-dependencies", {})

    def names(requirements: list[str], seen: frozenset = frozenset()) -> set[str]:
        found = set()
        for requirement in requirements:
            name, extras = requirement_name(requirement)
            if name != own:
                found.add(name)
            for extra in extras if name == own else []:
                if extra not in seen:
                    found |= names(raw.get(extra, []), seen | {extra})
        return found

    extras = {extra: names(reqs, frozenset({extra})) for extra, reqs in raw.items()}
    return own, names(project.get("dependencies", [])), extras


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under `if TYPE_CHECKING:`; they never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return skipped


def imports(path: Path) -> list[tuple[str, int]]:
    """(dotted module, line) of every absolute import in the file, wherever it sits."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


def area_extra(relative: str) -> str | None:
    return next((extra for prefix, extra in AREAS if relative.startswith(prefix)), None)


def check(root: Path, pyproject: Path, *, try_import: bool) -> list[str]:
    own, base, extras = declared(pyproject)
    providers = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    files = sorted((root / "tritonrepo").rglob("*.py")) + sorted((root / "all_models").rglob("*.py"))
    # Triton's Python models import their sibling files (model_utils, token_bytes, hf_engine) as top-level modules.
    local = {"tritonrepo", "__future__"} | {path.stem for path in (root / "all_models").rglob("*.py")}
    problems, imported = [], set()
    for path in files:
        relative = path.relative_to(root).as_posix()
        extra = area_extra(relative)
        allowed = base | extras.get(extra, set())
        where_declared = f"the base dependencies or [{extra}]" if extra else "the base dependencies"
        for module, line in imports(path):
            top = module.split(".")[0]
            if top in stdlib or top in local or top in CONTAINER_ONLY:
                continue
            distributions = {normalize(d) for d in providers.get(top, [])}
            if not distributions:
                problems.append(f"{relative}:{line}: imports {module}, which no installed distribution provides here")
                continue
            if not distributions & allowed:
                elsewhere = sorted(x for x, names in extras.items() if distributions & names)
                note = f" (declared only in [{', '.join(elsewhere)}])" if elsewhere else ""
                problems.append(
                    f"{relative}:{line}: imports {module} from {'/'.join(sorted(distributions))}, which is not in "
                    f"{where_declared}{note}"
                )
            if try_import and module not in imported:
                imported.add(module)
                try:
                    importlib.import_module(module)
                except Exception as error:  # any failure to import is the finding
                    problems.append(f"{relative}:{line}: import {module} fails here: {type(error).__name__}: {error}")
    return problems


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening, then closed: nothing answers there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_cli(executable: str) -> list[str]:
    problems = []
    for args in (["--help"], ["smoke", "--help"], ["models"]):
        run = subprocess.run([executable, *args], capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            problems.append(f"`tritonrepo {' '.join(args)}` exited {run.returncode}: {run.stderr.strip()[-400:]}")
    http, grpc, openai = (_closed_port() for _ in range(3))
    argv = [executable, "smoke", "--json", "--url", f"127.0.0.1:{http}", "--grpc-url", f"127.0.0.1:{grpc}"]
    run = subprocess.run([*argv, "--openai-url", f"http://127.0.0.1:{openai}/v1"], capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    try:
        rows = json.loads(run.stdout)
    except ValueError:
        return [*problems, f"`tritonrepo smoke` crashed (exit {run.returncode}): {run.stderr.strip()[-400:]}"]
    if run.returncode != 6:  # every check fails with nothing listening: the smoke failure code, not a crash
        problems.append(f"`tritonrepo smoke` with nothing listening exited {run.returncode}, not 6")
    if not any(row["name"].startswith("OpenAI") for row in rows):
        problems.append("`tritonrepo smoke` ran no OpenAI check")
    for row in rows:
        if "ModuleNotFoundError" in row["detail"] or "ImportError" in row["detail"]:
            problems.append(f"`tritonrepo smoke` check {row['name']!r}: {row['detail']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--pyproject", type=Path, help="default: ROOT/pyproject.toml")
    parser.add_argument("--no-import", action="store_true", help="check declarations only")
    parser.add_argument("--cli", help="the install's tritonrepo executable, to run")
    args = parser.parse_args()
    problems = check(args.root, args.pyproject or args.root / "pyproject.toml", try_import=not args.no_import)
    if args.cli:
        problems += check_cli(args.cli)
    for problem in problems:
        print(problem)
    checked = "declared" if args.no_import else "declared and importable"
    checked += "; the CLI and smoke run" if args.cli else ""
    print(f"{len(problems)} problem(s) (checked: third-party imports {checked})" if problems
          else f"OK: every third-party import of tritonrepo/ and all_models/ is {checked}")  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

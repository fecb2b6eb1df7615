"""The import graph of tritonrepo/, read with ast: no module imports itself through others (function-level imports
count: a late import that dodges a circle still makes one), and the pure planning core loads nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tritonrepo"

# Planning that returns data: what `tritonrepo plan` runs and most unit tests hit. Importing it must load no module
# that writes files, starts processes or talks to a server, and none of its functions may import one.
PURE_PLANNING = (
    "tritonrepo.planning.request",
    "tritonrepo.planning.plan",
    "tritonrepo.planning.limits",
    "tritonrepo.planning.memory",
    "tritonrepo.planning.engine_plan",
    "tritonrepo.planning.llmapi_support",
    "tritonrepo.planning.llmapi",
    "tritonrepo.planning.llmapi_dense",
    "tritonrepo.planning.dynamo",
    "tritonrepo.planning.planner",
)
# Prefixes: a module named here or below it does I/O (our writers, downloads, processes, clients) or is one.
DOES_IO = (
    "tritonrepo.pytorch_path",
    "tritonrepo.repository.writer",
    "tritonrepo.repository.manifest",
    "tritonrepo.trtllm.adapter",
    "tritonrepo.trtllm.convert_worker",
    "tritonrepo.source.download",
    "tritonrepo.source.resolve",
    "tritonrepo.storage",
    "tritonrepo.serving",
    "tritonrepo.frontend",
    "tritonrepo.checks",
    "tritonrepo.planning.build",
    "tritonrepo.planning.engines",
    "tritonrepo.planning.stage_cache",
    "tritonrepo.planning.preview",
    "boto3",
    "botocore",
    "subprocess",
    "shutil",
    "socket",
    "urllib.request",
    "huggingface_hub",
    "httpx",
    "tritonclient",
    "pynvml",
    "tensorrt_llm",
    "torch",
    "transformers",
)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of `from .target import ...` (level 1) or `from ..target import ...` (level 2) in `module`."""
    base = module.split(".")
    base = base if is_package else base[:-1]  # in a package's __init__, `.` is the package itself
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[str, bool]]:
    """(imported name, whether it runs when the module is imported, i.e. outside any function) for every import in
    the file. `from a import b` gives both a.b and a: b may be a module or a name defined in a."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    in_functions = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        at_import = id(node) not in in_functions
        if isinstance(node, ast.Import):
            found += [(alias.name, at_import) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = _resolve_relative(module, path.name == "__init__.py", node.level, node.module)
            found += [(f"{source}.{alias.name}", at_import) for alias in node.names]
            found.append((source, at_import))
    return found


def _modules(root: Path) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def import_graph(root: Path = PACKAGE) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(our modules each of ours imports, the other modules each imports), every import counted."""
    files = _modules(root)
    edges: dict[str, set[str]] = {name: set() for name in files}
    external: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for target, _ in imports(path, root):
            edges[name] |= _our_targets(name, target, files)
            if target.split(".")[0] != root.name:
                external[name].add(target)
    return edges, external


def _our_targets(importer: str, target: str, files: dict) -> set[str]:
    """Our modules an import runs: the module and the __init__ of each package above it, except packages that hold
    the importer (their __init__ is already running; a module imports its siblings through them)."""
    if target not in files:
        return set()  # `from a import b` where b is a name, not a module: the entry for `a` covers it
    parts = target.split(".")
    named = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & files.keys()
    return {name for name in named if not (importer == name or importer.startswith(name + "."))}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted; the import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(edges.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def loaded_by_import(module: str, root: Path = PACKAGE) -> set[str]:
    """What importing `module` loads (module-level imports, followed through ours), plus what its own functions
    import: our modules by name, other modules as imported (`subprocess`, `subprocess.run`)."""
    files = _modules(root)

    def named(importer: str, targets: list[str]) -> set[str]:
        ours = {t for t in targets if t.split(".")[0] == root.name}
        return (set(targets) - ours) | {m for t in ours for m in _our_targets(importer, t, files)}

    found = named(module, [target for target, _ in imports(files[module], root)])
    todo = sorted(found & files.keys())
    seen = {module}
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        loads = named(current, [target for target, at_import in imports(files[current], root) if at_import])
        found |= loads
        todo += sorted(loads & files.keys())
    return found


def _is_io(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in DOES_IO)


def test_no_import_cycles():
    edges, _ = import_graph()
    found = cycles(edges)
    assert not found, "import circles among tritonrepo modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_graph_sees_function_level_and_relative_imports():
    edges, external = import_graph()
    # frontend/sampling.py imports `..source.generation_config` at module level, relatively
    assert "tritonrepo.source.generation_config" in edges["tritonrepo.frontend.sampling"]
    # the CLI imports its commands' libraries inside the command functions only
    assert "tritonrepo.planning.build" in edges["tritonrepo.cli.main"]
    assert "click" in external["tritonrepo.cli.main"]


def test_a_circle_made_by_a_late_import_is_found(tmp_path):
    package = tmp_path / "tritonrepo"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "inner" / "__init__.py").write_text("from tritonrepo.inner.a import A\n")
    (package / "inner" / "a.py").write_text("from tritonrepo.inner import b\nA = 1\n")
    (package / "inner" / "b.py").write_text("def f():\n    from tritonrepo.other import C\n")
    (package / "other.py").write_text("from tritonrepo.inner.a import A\nC = 2\n")
    edges, _ = import_graph(package)
    assert edges["tritonrepo.inner.a"] == {"tritonrepo.inner.b"}  # a sibling, not its own package's __init__
    assert cycles(edges) == [["tritonrepo.inner", "tritonrepo.inner.a", "tritonrepo.inner.b", "tritonrepo.other"]]


@pytest.mark.parametrize("module", PURE_PLANNING)
def test_pure_planning_does_no_io(module):
    io = sorted(name for name in loaded_by_import(module) if _is_io(name))
    assert not io, f"{module} imports modules that do I/O: {', '.join(io)}"


def test_the_plan_report_uses_only_the_pure_launch_command_of_the_pytorch_path():
    io = {name for name in loaded_by_import("tritonrepo.planning.report") if _is_io(name)}
    assert io == {"tritonrepo.pytorch_path", "tritonrepo.pytorch_path.launch_files"}
    assert not {name for name in loaded_by_import("tritonrepo.pytorch_path.launch_files") if _is_io(name)}


def test_every_planning_module_is_classified():
    """A new planning module says which side it is on, so the checks above cannot miss it."""
    planning = {module_name(p) for p in (PACKAGE / "planning").glob("*.py")} - {"tritonrepo.planning"}
    io_side = {name for name in planning if _is_io(name)}
    assert planning - io_side == {*PURE_PLANNING, "tritonrepo.planning.report"}


def test_the_io_check_sees_what_a_module_loads_through_others(tmp_path):
    package = tmp_path / "tritonrepo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pure.py").write_text("from tritonrepo.middle import X\n\ndef f():\n    import json\n")
    (package / "middle.py").write_text("import shlex\nX = 1\n\ndef g():\n    import subprocess\n")
    (package / "loud.py").write_text("from tritonrepo import middle\n\ndef h():\n    from subprocess import run\n")
    assert loaded_by_import("tritonrepo.pure", package) == {"tritonrepo.middle", "json", "shlex"}
    assert {"subprocess", "subprocess.run", "tritonrepo.middle"} <= loaded_by_import("tritonrepo.loud", package)

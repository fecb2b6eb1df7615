"""Which extra of `pip install "tritonrepo[...]"` brings a module that is missing: a one-line answer, not a traceback."""

from __future__ import annotations

import re
from importlib import metadata

# Import names that differ from their distribution's name
_DISTRIBUTION = {"grpc": "grpcio", "yaml": "pyyaml", "google": "protobuf", "pynvml": "nvidia-ml-py"}
_UMBRELLAS = {"all", "test"}  # extras that only gather others (or are for development)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extras_providing(module: str) -> list[str]:
    """The extras of the installed tritonrepo that declare the distribution of `module`, e.g. ['runtime']."""
    top = module.split(".")[0]
    wanted = _normalize(_DISTRIBUTION.get(top, top))
    try:
        requirements = metadata.requires("tritonrepo") or []
    except metadata.PackageNotFoundError:
        return []
    extras = set()
    for requirement in requirements:
        name, _, marker = requirement.partition(";")
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if extra and extra[1] not in _UMBRELLAS and _normalize(re.split(r"[\s<>=!~\[(]", name.strip())[0]) == wanted:
            extras.add(extra[1])
    return sorted(extras)


def missing_module_message(error: ModuleNotFoundError) -> str | None:
    """The line to print for a module an extra would have installed; None for any other missing module."""
    extras = extras_providing(error.name or "")
    if not extras:
        return None
    install = f'pip install "tritonrepo[{extras[0]}]"' if len(extras) == 1 else 'pip install "tritonrepo[all]"'
    where = f"the [{extras[0]}] extra" if len(extras) == 1 else f"the extras {', '.join(extras)}"
    return f"this needs the Python module {error.name!r}, which {where} installs: {install}"

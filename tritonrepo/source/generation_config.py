"""The sampling defaults a checkpoint declares in its generation_config.json (what build records for the front end)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GENERATION_CONFIG = "generation_config.json"
_INT32_MAX = 2**31 - 1


def sampling_defaults(folder: Path) -> dict[str, Any]:
    """do_sample, temperature, top_p and top_k as the folder's generation_config.json sets them; {} without the file.

    Only keys the file sets are kept (transformers' own defaults, such as top_k 50, are not the checkpoint's choice),
    and only values a request could carry; an unreadable file declares nothing."""
    try:
        data = json.loads((Path(folder) / GENERATION_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return usable_sampling_defaults(data) if isinstance(data, dict) else {}


def usable_sampling_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling keys of a generation config whose values are usable (types and ranges), in a fixed order."""

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    found: dict[str, Any] = {}
    if isinstance(data.get("do_sample"), bool):
        found["do_sample"] = data["do_sample"]
    if number(temperature := data.get("temperature")) and temperature >= 0:
        found["temperature"] = float(temperature)
    if number(top_p := data.get("top_p")) and 0 <= top_p <= 1:
        found["top_p"] = float(top_p)
    top_k = data.get("top_k")
    if isinstance(top_k, int) and not isinstance(top_k, bool) and 0 <= top_k <= _INT32_MAX:
        found["top_k"] = top_k
    return found

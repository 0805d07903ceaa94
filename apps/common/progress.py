"""Progress bars for long commands (tqdm on stderr). Pure: no Django. Off with quiet=True or when stderr is not a
terminal, so logs, pipes and tests get no bar characters."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int | None, desc: str, *, quiet: bool = False, unit: str = "it") -> Any:
    """A tqdm bar on stderr, or None (quiet, or stderr not a TTY). Callers do `if bar: bar.update(n)`."""
    stream = sys.stderr
    if quiet or not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True)

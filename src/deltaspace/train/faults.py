"""Pause points for the crash tests: a run can be held at a named point so a test can SIGKILL it there.

``DELTASPACE_PAUSE_AT=<point>:<step>`` (points: ``step``, ``eval``, ``checkpoint-write``) makes the process
write ``$DELTASPACE_PAUSE_FILE`` and sleep when it reaches that point at that optimizer step;
``DELTASPACE_PAUSE_RUN`` optionally restricts it to run directories whose path contains that text. Unset
(always, outside tests), :func:`pause_point` is one dictionary lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_AT_ENV = "DELTASPACE_PAUSE_AT"
PAUSE_FILE_ENV = "DELTASPACE_PAUSE_FILE"
PAUSE_RUN_ENV = "DELTASPACE_PAUSE_RUN"


def pause_point(point: str, step: int, run_dir: str | os.PathLike[str] = "") -> None:
    wanted = os.environ.get(PAUSE_AT_ENV)
    if not wanted or wanted != f"{point}:{step}":
        return
    if os.environ.get(PAUSE_RUN_ENV, "") not in os.fspath(run_dir):
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        Path(marker).write_text(f"{os.getpid()}\n")
    while True:  # until the test kills this process
        time.sleep(60)

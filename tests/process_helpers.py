"""Killing a real run part-way, for the resume tests: start the CLI, SIGKILL it once its journal shows progress."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path


def kill_when_predicted(command: list[str], journal: Path, blocks: int, env: dict[str, str],
                        cwd: Path | None = None, deadline_s: float = 240) -> list[int]:
    """Run ``command``, SIGKILL it once ``journal`` records ``blocks`` predicted blocks; the blocks recorded.

    Fails the test if the run ends on its own first (it finished before it could be killed).
    """
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    deadline = time.monotonic() + deadline_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if len(json.loads(journal.read_text())["predicted"]) >= blocks:
                proc.send_signal(signal.SIGKILL)
                break
        except (FileNotFoundError, ValueError, KeyError):
            pass
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return json.loads(journal.read_text())["predicted"]

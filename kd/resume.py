"""Resuming a stage that was interrupted (kill -9, power cut, Ctrl-C): which checkpoint, if any, to continue from.

A stage trains with its Trainer checkpoints in work/<stage>/, beside a `stage_key` file naming the config and
data it was started with. The Trainer writes a checkpoint's trainer_state.json last, so a checkpoint without a
readable one was cut short and is passed over; checkpoints of another config or data are never resumed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from kd.atomic import write_text

KEY_FILE = "stage_key"
# what Trainer._save_checkpoint writes, trainer_state.json last
CHECKPOINT_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")
_STEP = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(work_dir: Path) -> list[Path]:
    """The whole checkpoints in work_dir, oldest first."""
    found = []
    for folder in work_dir.glob("checkpoint-*"):
        match = _STEP.match(folder.name)
        if not match or not all((folder / f).is_file() for f in CHECKPOINT_FILES):
            continue
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        found.append((int(match.group(1)), folder))
    return [folder for _, folder in sorted(found)]


def resume_point(work_dir: Path, key: str) -> tuple[Path | None, str]:
    """The checkpoint to resume from (None: start afresh) and a sentence saying why."""
    if not work_dir.is_dir():
        return None, "no checkpoints"
    key_file = work_dir / KEY_FILE
    recorded = key_file.read_text().strip() if key_file.is_file() else None
    if recorded != key:
        return None, "the checkpoints there were made with another config or data, so they are discarded"
    checkpoints = complete_checkpoints(work_dir)
    if not checkpoints:
        return None, "no whole checkpoint was written before it stopped"
    return checkpoints[-1], f"resuming from {checkpoints[-1].name}"


def start_afresh(work_dir: Path, key: str) -> None:
    """Clear work_dir and bind it to this stage key (main process only)."""
    shutil.rmtree(work_dir, ignore_errors=True)
    write_text(work_dir / KEY_FILE, key + "\n")

"""Training callbacks of the container: checkpoints for resumable (spot) training, the model kept on stop.

Checkpoints are ``xgboost-checkpoint.<iteration>`` in the checkpoint directory (the container's
``checkpointing.py``); the five most recent are kept, and one SageMaker is still uploading
(``<name>.sagemaker-uploading``) is left alone. A restarted job resumes from the latest readable one.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import xgboost as xgb

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "xgboost-checkpoint"
CHECKPOINTS_KEPT = 5
UPLOADING_SUFFIX = ".sagemaker-uploading"
_CHECKPOINT = re.compile(rf"^{CHECKPOINT_NAME}\.(\d+)$")


def save_model(booster: xgb.Booster, path: Path, model_format: str = "ubj") -> None:
    """Write the model (UBJSON, or ``json``) atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", suffix=".tmp", delete=False) as tmp:
        tmp.write(booster.save_raw(model_format))
    os.chmod(tmp.name, 0o644)  # NamedTemporaryFile makes it private; the model is read by other processes
    os.replace(tmp.name, path)


def load_checkpoint(directory: Path | None) -> tuple[xgb.Booster | None, int]:
    """(the latest readable checkpoint, the rounds it holds), or ``(None, 0)``."""
    if directory is None or not directory.is_dir():
        return None, 0
    found = sorted(
        ((int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT.match(p.name))), reverse=True
    )
    for iteration, path in found:
        try:
            booster = xgb.Booster(model_file=bytearray(path.read_bytes()))
        except xgb.core.XGBoostError:
            log.warning("Checkpoint %s cannot be read; trying an older one", path.name)
            continue
        log.info("Checkpoint loaded from %s", path)
        log.info("Resuming from iteration %d", iteration + 1)
        return booster, iteration + 1
    return None, 0


class SaveCheckpoint(xgb.callback.TrainingCallback):
    """Saves ``xgboost-checkpoint.<iteration>`` after each round, keeping the most recent five."""

    def __init__(self, directory: Path, start: int) -> None:
        super().__init__()
        self.directory = directory
        self.start = start
        directory.mkdir(parents=True, exist_ok=True)

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        iteration = self.start + epoch
        save_model(model, self.directory / f"{CHECKPOINT_NAME}.{iteration}")
        stale = self.directory / f"{CHECKPOINT_NAME}.{iteration - CHECKPOINTS_KEPT}"
        if stale.exists() and not stale.with_name(stale.name + UPLOADING_SUFFIX).exists():
            stale.unlink()
        return False


class SaveIntermediateModel(xgb.callback.TrainingCallback):
    """Overwrites the model after each round (``save_model_on_termination``), so a stopped job keeps one."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        save_model(model, self.path)
        return False

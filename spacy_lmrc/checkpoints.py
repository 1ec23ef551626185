"""One checkpoint layout for every training loop here (LLM fine-tuning, the proposer).

``<output>/checkpoints/step-N/`` holds what the model's own ``save_pretrained`` writes (the
trained weights: a LoRA adapter, a whole model, a proposer folder) and ``training_state.pt``,
the loop's state: optimizer, scheduler, the position reached and whatever the loop needs to
resume exactly (RNG states, history). Only the newest ``keep`` checkpoints stay on disk.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "training_state.pt"


def load_state(folder: Path) -> dict[str, Any]:
    """The loop state saved in a checkpoint folder."""
    import torch

    return torch.load(Path(folder) / STATE_FILE, weights_only=False, map_location="cpu")


def checkpoint_folders(output_dir: Path,
                       accept: Callable[[dict[str, Any]], bool] | None = None) -> list[Path]:
    """The checkpoints of ``output_dir`` (those whose state ``accept`` takes), oldest first."""
    found = []
    for path in (Path(output_dir) / CHECKPOINTS_DIR).glob("step-*"):
        if (path / STATE_FILE).exists() and (accept is None or accept(load_state(path))):
            found.append(path)
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(output_dir: Path, step: int, model: Any, state: dict[str, Any], *,
                    keep: int, accept: Callable[[dict[str, Any]], bool] | None = None) -> Path:
    """Write ``checkpoints/step-<step>`` (``model.save_pretrained`` + ``state``) and delete all
    but the newest ``keep`` checkpoints of the same kind; the folder written."""
    import torch

    target = Path(output_dir) / CHECKPOINTS_DIR / f"step-{step}"
    model.save_pretrained(target)
    torch.save(state, target / STATE_FILE)
    for old in checkpoint_folders(output_dir, accept)[:-keep]:
        shutil.rmtree(old)
    return target

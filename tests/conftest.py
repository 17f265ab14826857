"""Shared test fixtures: where the bundled and shared models are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED_MODELS = REPO.parent / "shared" / "models"


def shared_models(kind: str | None = None) -> list[Path]:
    """Every .tflite under ../shared/models (empty when the folder is absent)."""
    if not SHARED_MODELS.is_dir():
        return []
    models = sorted(SHARED_MODELS.rglob("*.tflite"))
    if kind == "float":
        models = [m for m in models if "int8" not in m.name and "wakeword" not in str(m)]
    elif kind == "quant":
        models = [m for m in models if "int8" in m.name or "wakeword" in str(m)]
    return models


def model_id(path: Path) -> str:
    return path.relative_to(SHARED_MODELS).as_posix() if SHARED_MODELS in path.parents else path.name


@pytest.fixture
def data_dir() -> Path:
    return DATA

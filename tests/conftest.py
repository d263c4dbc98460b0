"""Session fixtures: one tiny random checkpoint in the official format, loaded once in float64.

float64 keeps near-ties from flipping between the cached engine and the uncached reference;
peak=8 sharpens the output distributions so that greedy choices are far from ties anyway.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_checkpoint import write_tiny_checkpoint

from pangu_demo.engine import Decoder
from pangu_demo.loading import LoadedModel, load_model

# Tiny models are dominated by per-op overhead: one thread is several times faster than two,
# especially while another job keeps the cores busy.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-pangu", peak=8.0)


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> LoadedModel:
    return load_model(tiny_checkpoint, dtype="float64", device="cpu", progress=False)


@pytest.fixture(scope="session")
def tiny_decoder(tiny_model: LoadedModel) -> Decoder:
    return Decoder(tiny_model.model, tiny_model.tokenizer)

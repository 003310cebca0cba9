"""The training stage reads its splits lazily (same validation, clear errors for missing files) and builds the model
its params name."""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.config import load_params
from pipeline.data.dataset import StoredPairs
from pipeline.errors import InputDataError
from pipeline.io import write_png
from pipeline.models import ModelSpec, build_model, load_model
from pipeline.training.losses import weighted_loss
from pipeline.training.loop import validate
from pipeline.training.stage import load_split, run_training


def _pairs_index(tmp_path, rng, splits=("train", "train", "val", "val", "val")):
    rows = []
    for i, split in enumerate(splits):
        rows.append({"pair_id": i, "moire_path": f"moire/{i:06d}.png", "clean_path": f"clean/{i:06d}.png", "split": split})
        for key in ("moire_path", "clean_path"):
            write_png(tmp_path / "data" / rows[-1][key], rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    pd.DataFrame(rows).to_parquet(tmp_path / "pairs.parquet", index=False)
    return tmp_path / "pairs.parquet", tmp_path / "data"


def test_streamed_validation_scores_what_in_memory_validation_scores(tmp_path, rng, tiny_params):
    index, data = _pairs_index(tmp_path, rng)
    val = load_split(index, data, "val")
    assert isinstance(val, StoredPairs) and len(val) == 3
    model = build_model(ModelSpec("unet", 8, 2), seed=0)
    loss = weighted_loss(tiny_params.train.loss)
    streamed = validate(model, val, loss, torch.device("cpu"))
    in_memory = validate(model, list(val), loss, torch.device("cpu"))
    assert streamed == in_memory and np.isfinite(streamed).all()


def test_a_split_with_a_missing_file_is_refused_before_training(tmp_path, rng):
    index, data = _pairs_index(tmp_path, rng)
    (data / "clean/000001.png").unlink()
    with pytest.raises(InputDataError, match=r"1 train image\(s\) listed in .*pairs.parquet are missing "
                                             r"\(first: .*clean/000001.png\); run the synthesize and preprocess"):
        load_split(index, data, "train")
    assert len(load_split(index, data, "val")) == 3
    with pytest.raises(InputDataError, match="lists no test pairs"):
        load_split(index, data, "test")


def test_the_stage_builds_the_model_with_the_params_correction(tmp_path, rng, monkeypatch):
    """train.correction and correction_width reach the model the stage writes."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # the live MLflow run goes to a store here, not the checkout's
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    index, data = _pairs_index(tmp_path, rng)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump({"seed": 1, "train": {
        "model": "unet", "channels": 4, "depth": 2, "epochs": 1, "batch_size": 2, "patch_size": 16, "device": "cpu",
        "correction": "chroma", "correction_width": 4.0}}))
    out = tmp_path / "model"
    run_training(load_params(params_path), data, index, out, out / "history.csv")
    model, spec = load_model(out)
    assert (spec.correction, spec.correction_width, spec.correction_cast) == ("chroma", 4.0, "gain")
    assert model.chroma and model.narrowing.width == 4.0

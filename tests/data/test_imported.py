from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.config import ImportedDataset, parse_params
from pipeline.data.dataset import load_pairs
from pipeline.data.imported import import_dataset_pairs, next_pair_id
from pipeline.errors import InputDataError, ParamsError


def _image(path: Path, seed: int) -> None:
    """A 16×16 RGB image; PNG or JPEG by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def fhdmi_root(tmp_path) -> Path:
    """An FHDMi-layout root: 3 train pairs (one moiré file unreadable), 1 unpartnered file, 1 test pair."""
    root = tmp_path / "FHDMi"
    for split, number in [("train", 1), ("train", 2), ("train", 3), ("test", 4)]:
        _image(root / split / "source" / f"src_{number:05d}.png", number)
        _image(root / split / "target" / f"tar_{number:05d}.png", 10 + number)
    (root / "train" / "source" / "src_00002.png").write_bytes(b"garbage")
    _image(root / "train" / "source" / "src_00009.png", 9)
    return root


def test_imported_pairs_join_the_chosen_split_validated_with_absolute_paths(tmp_path, fhdmi_root, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative dataset path is resolved against the working directory
    datasets = [
        ImportedDataset(path=Path("FHDMi"), layout="fhdmi", dataset_split="train", split="train"),
        ImportedDataset(path=fhdmi_root, dataset_split="test", split="val"),
    ]
    imported = import_dataset_pairs(datasets, first_pair_id=12)
    usable = imported.usable
    assert list(usable.columns) == ["pair_id", "split", "source_id", "moire_path", "clean_path"]
    assert usable.pair_id.tolist() == [12, 14, 15] and usable.pair_id.dtype == np.int64
    assert usable.split.tolist() == ["train", "train", "val"]
    assert usable.source_id.tolist() == ["dataset0-fhdmi/train/00001", "dataset0-fhdmi/train/00003",
                                         "dataset1-fhdmi/test/00004"]
    assert all(Path(p).is_absolute() for p in [*usable.moire_path, *usable.clean_path])
    assert imported.rejected.pair_id.tolist() == [13] and "cannot read image" in imported.rejected.reason[0]
    assert [(s.name, s.reason) for s in imported.unpaired] == [
        ("dataset0-fhdmi/train/00009", "no clean partner target/tar_00009.png")]
    # train and evaluate join `data / path`; an absolute path survives the join
    assert load_pairs(usable, tmp_path / "data" / "synthesize")[2][0].shape == (16, 16, 3)


def test_train_pairs_smaller_than_the_training_patch_are_rejected_with_their_size(fhdmi_root):
    datasets = [ImportedDataset(path=fhdmi_root, dataset_split="train", split="train"),
                ImportedDataset(path=fhdmi_root, dataset_split="test", split="test")]
    imported = import_dataset_pairs(datasets, 0, train_patch=32)  # the 16×16 pairs: no 32-px patch in them
    assert imported.usable.split.tolist() == ["test"]  # evaluation restores any size
    small, unreadable = imported.rejected.reason.iloc[[0, 2]], imported.rejected.reason.iloc[1]
    assert small.tolist() == ["16x16 is smaller than train.patch_size 32, the patches training cuts from it"] * 2
    assert "cannot read image" in unreadable
    assert len(import_dataset_pairs(datasets, 0, train_patch=16).usable) == 3  # as large as the patch: kept


def test_val_and_test_pairs_below_ssims_window_are_rejected_and_named_in_the_log(fhdmi_root, caplog):
    tiny = fhdmi_root / "test"
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tiny / "source" / "src_00005.png")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(tiny / "target" / "tar_00005.png")
    with caplog.at_level("WARNING", logger="pipeline.data.manifest"):
        imported = import_dataset_pairs([ImportedDataset(path=fhdmi_root, dataset_split="test", split="val")], 0)
    assert imported.usable.source_id.tolist() == ["dataset0-fhdmi/test/00004"]
    assert imported.rejected.reason.tolist() == ["10x8 is smaller than 11x11, the SSIM window val and test pairs "
                                                 "are scored with"]
    assert f"rejected pair 1 ({tiny.resolve() / 'source' / 'src_00005.png'}): 10x8 is smaller" in caplog.text


def test_limit_keeps_the_first_pairs_by_name(fhdmi_root):
    imported = import_dataset_pairs([ImportedDataset(path=fhdmi_root, split="test", limit=2)], 0)
    assert imported.usable.source_id.tolist() == ["dataset0-fhdmi/train/00001"]
    assert len(imported.rejected) == 1  # the second of the two was the unreadable one


def test_missing_dataset_path_names_the_key_and_value(tmp_path, fhdmi_root):
    datasets = [ImportedDataset(path=fhdmi_root, split="train"), ImportedDataset(path=tmp_path / "nope", split="test")]
    with pytest.raises(InputDataError) as info:
        import_dataset_pairs(datasets, 0)
    assert str(info.value) == (
        f"preprocess.datasets[1].path = '{tmp_path / 'nope'}': folder not found (fix the path or remove the entry)")
    with pytest.raises(InputDataError, match=r"^preprocess.datasets\[0\]: .* is not in the uhdm layout"):
        import_dataset_pairs([ImportedDataset(path=fhdmi_root, layout="uhdm", split="train")], 0)


def test_no_datasets_leave_the_index_ids_integer():
    imported = import_dataset_pairs([], 0)
    synthetic = pd.DataFrame({"pair_id": [0, 1], "split": "train", "source_id": "s", "moire_path": "m", "clean_path": "c"})
    assert pd.concat([synthetic, imported.usable]).pair_id.dtype == np.int64
    assert imported.unpaired == [] and len(imported.rejected) == 0


def test_next_pair_id_follows_every_frame():
    assert next_pair_id(pd.DataFrame({"pair_id": [3, 7]}), pd.DataFrame({"pair_id": [9]})) == 10
    assert next_pair_id(pd.DataFrame({"pair_id": []})) == 0


def test_params_errors_name_the_dataset_entry():
    with pytest.raises(ParamsError) as info:
        parse_params({"preprocess": {"datasets": [{"path": "/d", "split": "train", "layout": "lcd"}]}}, source="p")
    assert str(info.value) == (
        "p: preprocess.datasets[0].layout = 'lcd': Input should be 'auto', 'uhdm', 'fhdmi', 'tip2018' or 'generic'")
    with pytest.raises(ParamsError) as info:
        parse_params({"preprocess": {"datasets": [{"path": "/d", "split": "train", "root": "x"}]}}, source="p")
    assert str(info.value) == (
        "p: preprocess.datasets[0].root = 'x': unknown key; allowed keys here: dataset_split, layout, limit, path, split")

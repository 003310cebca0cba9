import json
import unicodedata
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ImportedDataset
from pipeline.data.paired_folder import find_paired_folder
from pipeline.errors import InputDataError, ParamsError
from pipeline.models import ModelSpec, build_model, save_model
from pipeline.sources.paired_datasets import DATASET_LAYOUTS, find_pairs


def _image(path: Path, seed: int = 0) -> None:
    """A 16×16 RGB image; PNG or JPEG by the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)


def _pairs(root: Path, moire_and_clean: list[tuple[str, str | None]]) -> Path:
    """Write each (moiré, clean) file pair under `root`; clean None leaves the moiré file unpartnered."""
    for i, (moire, clean) in enumerate(moire_and_clean):
        _image(root / moire, i)
        if clean:
            _image(root / clean, 100 + i)
    return root


def uhdm(root: Path, train: str = "train", test: str = "test") -> Path:
    return _pairs(root, [
        (f"{train}/pair_01/0001_moire.jpg", f"{train}/pair_01/0001_gt.jpg"),
        (f"{train}/pair_02/0002_moire.jpg", f"{train}/pair_02/0002_gt.jpg"),
        (f"{train}/pair_02/0003_moire.jpg", None),
        (f"{test}/0004_moire.jpg", f"{test}/0004_gt.jpg"),
    ])


def fhdmi(root: Path) -> Path:
    return _pairs(root, [
        ("train/source/src_00001.png", "train/target/tar_00001.png"),
        ("train/source/src_00002.png", "train/target/tar_00002.png"),
        ("train/source/src_00003.png", None),
        ("test/source/src_00004.png", "test/target/tar_00004.png"),
    ])


def tip2018(root: Path) -> Path:
    return _pairs(root, [
        ("trainData/source/0001_source.png", "trainData/target/0001_target.png"),
        ("trainData/source/0002_source.png", "trainData/target/0002_target.png"),
        ("trainData/source/0003_source.png", None),
        ("testData/source/0004_source.png", "testData/target/0004_target.png"),
    ])


def generic(root: Path) -> Path:
    return _pairs(root, [("moire/a.png", "clean/a.png"), ("moire/b.jpg", "clean/b.jpg"), ("moire/c.png", None)])


@pytest.mark.parametrize("build, layout, names, splits, skipped", [
    (uhdm, "uhdm", ["train/pair_01/0001", "train/pair_02/0002", "test/0004"], ["train", "train", "test"],
     ["train/pair_02/0003"]),
    (fhdmi, "fhdmi", ["train/00001", "train/00002", "test/00004"], ["train", "train", "test"], ["train/00003"]),
    (tip2018, "tip2018", ["train/0001", "train/0002", "test/0004"], ["train", "train", "test"], ["train/0003"]),
    (generic, "generic", ["a.png", "b.jpg"], ["", ""], ["c.png"]),
])
def test_each_published_layout_is_detected_and_paired(tmp_path, build, layout, names, splits, skipped):
    found = find_pairs(build(tmp_path / "data"))
    assert found.layout == layout
    assert [p.name for p in found.pairs] == names
    assert [p.split for p in found.pairs] == splits
    assert [s.name for s in found.skipped] == skipped
    assert all(p.moire_path.is_file() and p.clean_path.is_file() and p.moire_path != p.clean_path for p in found.pairs)
    assert find_pairs(tmp_path / "data", layout).pairs == found.pairs


@pytest.mark.parametrize("files, names, skipped", [
    # a second file under a pair's name: one pair (the first by name), the other said
    ([("test/source/src_00001.jpg", "test/target/tar_00001.jpg"),
      ("test/source/src_00001.png", "test/target/tar_00001.png")],
     ["test/00001"],
     [("test/00001", "source/src_00001.png names the same pair as source/src_00001.jpg, which is read; rename one")]),
    # FHDMi does not nest its files: one in a subfolder is not read, and said
    ([("test/source/src_00001.png", "test/target/tar_00001.png"),
      ("test/source/more/src_00002.png", "test/target/more/tar_00002.png")],
     ["test/00001"],
     [("test/source/more/src_00002.png", "in a subfolder of source/, which the fhdmi layout does not read")]),
    # a clean file no moiré file names
    ([("test/source/src_00001.png", "test/target/tar_00001.png"), ("test/target/tar_00009.png", None)],
     ["test/00001"], [("test/target/tar_00009.png", "no moiré file names it as its clean partner")]),
])
def test_files_that_make_no_pair_of_their_own_are_skipped_with_why(tmp_path, files, names, skipped):
    found = find_pairs(_pairs(tmp_path / "f", files), "fhdmi")
    assert [p.name for p in found.pairs] == names
    assert [(item.name, item.reason) for item in found.skipped] == skipped


def test_a_tip2018_name_with_and_without_its_underscore_is_one_pair_not_two(tmp_path):
    found = find_pairs(_pairs(tmp_path / "t", [("testData/source/0001_source.png", "testData/target/0001_target.png"),
                                               ("testData/source/0001source.png", "testData/target/0001target.png")]))
    assert [p.name for p in found.pairs] == ["test/0001"] and found.pairs[0].moire_path.name == "0001_source.png"
    assert [item.name for item in found.skipped] == ["test/0001"]


def test_a_clean_file_without_its_moire_file_is_said_in_the_generic_layout_too(tmp_path):
    found = find_pairs(_pairs(tmp_path / "g", [("moire/a.png", "clean/a.png"), ("clean/orphan.png", None)]))
    assert found.layout == "generic" and [p.name for p in found.pairs] == ["a.png"]
    assert [(item.name, item.reason) for item in found.skipped] == [
        ("clean/orphan.png", "no moiré file names it as its clean partner")]


def test_a_pair_whose_name_is_not_utf8_is_skipped_and_said_readably(tmp_path):
    latin1 = b"caf\xe9 shot.png".decode("utf-8", "surrogateescape")  # a Latin-1 name, as Python lists it
    found = find_pairs(_pairs(tmp_path / "g", [("moire/a.png", "clean/a.png"), (f"moire/{latin1}", f"clean/{latin1}"),
                                               (f"clean/x{latin1}", None)]))
    # before: the pair was kept, and its name crashed the per-image CSV, the report and the preprocess index
    assert [p.name for p in found.pairs] == ["a.png"]
    assert [(item.name, item.reason) for item in found.skipped] == [
        ("caf\\xe9 shot.png", "its file name is not UTF-8 (from an older system or zip?): rename it"),
        ("clean/xcaf\\xe9 shot.png", "no moiré file names it as its clean partner")]


@pytest.mark.parametrize("moire_form, clean_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_a_name_in_another_unicode_form_on_each_side_is_one_pair(tmp_path, moire_form, clean_form):
    # a moiré half copied from a Mac (decomposed names) beside a clean half written on Linux (composed)
    moire_name, clean_name = (unicodedata.normalize(form, "café_été.png") for form in (moire_form, clean_form))
    assert moire_name != clean_name
    root = _pairs(tmp_path / "set", [(f"moire/{moire_name}", f"clean/{clean_name}"), ("moire/plain.png", None)])
    _pairs(tmp_path / "fhdmi", [(f"test/source/src_{moire_name}", f"test/target/tar_{clean_name}")])
    found = find_pairs(root)
    assert [(pair.name, pair.moire_path.name, pair.clean_path.name) for pair in found.pairs] == [
        (moire_name, moire_name, clean_name)]
    assert [item.name for item in found.skipped] == ["plain.png"]
    # an --include typed in the other form selects it too
    typed = unicodedata.normalize(clean_form, "café*")
    assert [pair.name for pair in find_paired_folder(root, include=typed).pairs] == [moire_name]
    # the moiré name in both forms: one pair, the second file said, as a second file under a pair's name is
    _image(root / "moire" / clean_name, 7)
    both = find_pairs(root)
    assert [pair.clean_path.name for pair in both.pairs] == [clean_name]
    assert [item.reason for item in both.skipped if "names the same pair" in item.reason] != []
    fhdmi_found = find_pairs(tmp_path / "fhdmi")
    assert [pair.clean_path.name for pair in fhdmi_found.pairs] == [f"tar_{clean_name}"]
    assert fhdmi_found.skipped == []


def test_a_stray_image_in_a_uhdm_folder_is_said(tmp_path):
    found = find_pairs(_pairs(tmp_path / "u", [("test/0001_moire.jpg", "test/0001_gt.jpg"), ("test/thumb.jpg", None)]))
    assert [p.name for p in found.pairs] == ["test/0001"]
    assert [(item.name, item.reason) for item in found.skipped] == [
        ("test/thumb.jpg", "no moiré file names it as its clean partner")]


def test_partners_are_the_published_names(tmp_path):
    pair = find_pairs(uhdm(tmp_path)).pairs[0]
    assert (pair.moire_path.name, pair.clean_path.name) == ("0001_moire.jpg", "0001_gt.jpg")
    pair = find_pairs(fhdmi(tmp_path / "f")).pairs[0]
    assert (pair.moire_path.relative_to(tmp_path / "f").as_posix(), pair.clean_path.relative_to(tmp_path / "f").as_posix()) == (
        "train/source/src_00001.png", "train/target/tar_00001.png")
    assert find_pairs(fhdmi(tmp_path / "f")).skipped[0].reason == "no clean partner target/tar_00003.png"


def test_capitalised_split_folders_and_tip_names_without_underscore(tmp_path):
    found = find_pairs(uhdm(tmp_path / "u", train="Train", test="Test"))
    assert [p.split for p in found.pairs] == ["train", "train", "test"]
    _pairs(tmp_path / "t", [("testData/source/ab01source.png", "testData/target/ab01target.png")])
    assert [p.name for p in find_pairs(tmp_path / "t", "tip2018").pairs] == ["test/ab01"]


def test_split_selects_one_split_folder_and_names_the_ones_found(tmp_path):
    root = fhdmi(tmp_path / "fhdmi")
    assert [p.name for p in find_pairs(root, split="test").pairs] == ["test/00004"]
    assert find_pairs(root, split="test").skipped == []
    with pytest.raises(InputDataError) as info:
        find_pairs(root, split="val")
    assert str(info.value) == f"{root} has no val split in the fhdmi layout; found: train, test"


def test_a_root_that_is_one_split_folder(tmp_path):
    root = fhdmi(tmp_path / "fhdmi")
    found = find_pairs(root / "test")
    assert (found.layout, [p.name for p in found.pairs]) == ("fhdmi", ["test/00004"])
    (tmp_path / "u").mkdir()
    origin = uhdm(tmp_path / "u").joinpath("test").rename(tmp_path / "u" / "test_origin")
    assert [(p.name, p.split) for p in find_pairs(origin).pairs] == [("0004", "")]


def test_wrong_or_unknown_layout_is_one_line(tmp_path):
    root = fhdmi(tmp_path / "fhdmi")
    with pytest.raises(InputDataError, match=r"is not in the uhdm layout \(<root>/\{train,test\}/\*\*/NNNN_moire.jpg"):
        find_pairs(root, "uhdm")
    (tmp_path / "other" / "images").mkdir(parents=True)
    _image(tmp_path / "other" / "images" / "x.png")
    with pytest.raises(InputDataError) as info:
        find_pairs(tmp_path / "other")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'other'} matches no known paired-dataset layout; expected one of uhdm: ")
    assert all(f"{name}: <root>" in message for name in DATASET_LAYOUTS) and "\n" not in message
    with pytest.raises(ParamsError, match="layout 'lcdmoire' is not one of: auto, uhdm, fhdmi, tip2018, generic"):
        find_pairs(root, "lcdmoire")
    with pytest.raises(ParamsError, match="split 'dev' is not one of: train, val, test"):
        find_pairs(root, split="dev")
    photo = tmp_path / "other" / "images" / "x.png"  # a photo named for its folder: was "folder not found"
    with pytest.raises(InputDataError, match=rf"^{photo} is a file, not a dataset folder: name the folder holding"):
        find_pairs(photo)


def test_a_layouts_folders_without_images_say_so(tmp_path):
    for folder in ("moire", "clean"):
        (tmp_path / "empty" / folder).mkdir(parents=True)
    expected = (f"{tmp_path / 'empty'} has the generic layout's folders but no moiré image in them named as it "
                "names them (<root>/moire/NAME + <root>/clean/NAME)")
    for layout in ("auto", "generic"):
        with pytest.raises(InputDataError) as info:
            find_pairs(tmp_path / "empty", layout)
        assert str(info.value) == expected


def test_links_to_nothing_are_paired_and_left_to_fail_when_read_not_passed_over(tmp_path):
    root = _pairs(tmp_path / "set", [("moire/a.png", "clean/a.png")])
    (root / "moire" / "b.png").symlink_to(tmp_path / "gone.png")
    (root / "clean" / "b.png").symlink_to(tmp_path / "gone.png")
    (root / "moire" / "c.png").symlink_to(tmp_path / "gone.png")  # and no partner at all
    found = find_pairs(root)
    assert [pair.name for pair in found.pairs] == ["a.png", "b.png"]
    assert [(item.name, item.reason) for item in found.skipped] == [("c.png", "no clean partner clean/c.png")]


def test_missing_root_is_one_line(tmp_path):
    with pytest.raises(InputDataError) as info:
        find_pairs(tmp_path / "nowhere")
    assert str(info.value) == f"dataset folder not found: {tmp_path / 'nowhere'}"


def test_params_accept_exactly_the_importer_layouts():
    assert get_args(ImportedDataset.model_fields["layout"].annotation) == ("auto", *DATASET_LAYOUTS)


runner = CliRunner()


def test_evaluate_cli_on_a_published_layout_skips_and_counts_unusable_pairs(tmp_path):
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec), spec, tmp_path / "model")
    root = fhdmi(tmp_path / "fhdmi")
    (root / "train" / "source" / "src_00002.png").write_bytes(b"not a png")
    args = ["evaluate", "--model", str(tmp_path / "model"), "--pairs", str(root), "--device", "cpu", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # done, two pairs skipped
    assert "skipped train/00002: cannot read image" in result.output
    assert "skipped train/00003: no clean partner target/tar_00003.png" in result.output
    assert "skipped 2 of 4 pairs" in result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["count"], summary["skipped"]) == (2, 2)
    result = runner.invoke(app, [*args, "--layout", "fhdmi", "--split", "test"])
    assert json.loads(result.stdout.strip().splitlines()[-1])["count"] == 1
    result = runner.invoke(app, [*args, "--layout", "tip2018"])
    assert result.exit_code == 2
    # FHDMi's folders are TIP2018's (source/, target/), its file names are not
    assert (f"error: {root} has the tip2018 layout's folders but no moiré image in them named as it names them"
            in result.output)

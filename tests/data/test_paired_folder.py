"""Selecting pairs of a paired folder by a glob on their names and a limit; unreadable pairs are skipped."""

import numpy as np
import pytest

from pipeline.data.paired_folder import decoded_pairs, find_paired_folder
from pipeline.errors import InputDataError, ParamsError
from pipeline.io import write_png


@pytest.fixture
def folder(tmp_path, rng):
    """Two groups in one generic folder, an unpartnered file in each, and one unreadable pair."""
    root = tmp_path / "paired"
    for name in ("fhdmi_3.png", "fhdmi_1.png", "fhdmi_2.png", "tip_1.png", "tip_2.png", "fhdmi_9.png", "tip_0.png"):
        write_png(root / "moire" / name, rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        if name not in ("fhdmi_9.png", "tip_0.png"):
            write_png(root / "clean" / name, rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    (root / "moire" / "fhdmi_2.png").write_bytes(b"not a png")
    return root


def test_include_selects_a_group_and_its_unpaired_files(folder):
    found = find_paired_folder(folder, include="fhdmi_*")
    assert [p.name for p in found.pairs] == ["fhdmi_1.png", "fhdmi_2.png", "fhdmi_3.png"]
    assert [s.name for s in found.skipped] == ["fhdmi_9.png"]
    assert [p.name for p in find_paired_folder(folder, include="tip_*").pairs] == ["tip_1.png", "tip_2.png"]
    assert len(find_paired_folder(folder).pairs) == 5


def test_limit_keeps_the_first_pairs_by_name_and_the_unpaired_files_before_the_cut(folder):
    found = find_paired_folder(folder, include="*_[12].png", limit=3)
    assert [p.name for p in found.pairs] == ["fhdmi_1.png", "fhdmi_2.png", "tip_1.png"]
    assert [p.name for p in find_paired_folder(folder, limit=1).pairs] == ["fhdmi_1.png"]
    assert [s.name for s in find_paired_folder(folder, include="tip_*", limit=1).skipped] == ["tip_0.png"]
    assert find_paired_folder(folder, include="fhdmi_*", limit=2).skipped == []  # fhdmi_9 lies beyond the cut


def test_unreadable_pairs_are_skipped_and_counted_not_fatal(folder):
    found = find_paired_folder(folder, include="fhdmi_*")
    skipped = [(item.name, item.reason) for item in found.skipped]
    decoded = list(decoded_pairs(found.pairs, skipped))
    assert [name for name, _ in decoded] == ["fhdmi_1.png", "fhdmi_3.png"]
    assert all(moire.shape == clean.shape == (12, 16, 3) for _, (moire, clean) in decoded)
    assert [name for name, _ in skipped] == ["fhdmi_9.png", "fhdmi_2.png"]
    assert "cannot read image" in dict(skipped)["fhdmi_2.png"]


def test_no_matching_pair_or_a_bad_selection_is_one_line(folder):
    with pytest.raises(InputDataError) as info:
        find_paired_folder(folder, include="uhdm_*")
    assert str(info.value) == f"no pair in {folder} matches include 'uhdm_*' (generic layout, 5 pairs, 2 unpaired files)"
    with pytest.raises(ParamsError, match=r"^include 'fhdmi_\[1': unclosed \[ in the glob; allowed: a glob on pair names"):
        find_paired_folder(folder, include="fhdmi_[1")
    with pytest.raises(ParamsError, match=r"^limit 0: must be at least 1 \(omit it for every pair\)$"):
        find_paired_folder(folder, limit=0)

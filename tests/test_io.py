import stat

import numpy as np
import pytest

from pipeline.io import DIR_MODE, FILE_MODE, atomic_dir, atomic_path, write_json, write_png


def test_atomic_outputs_get_ordinary_permissions_not_owner_only(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_png(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    with atomic_dir(tmp_path / "folder") as staging:
        (staging / "c.txt").write_text("c")
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == FILE_MODE
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == DIR_MODE


def test_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "dir") as staging:
            (staging / "x").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import InputDataError
from pipeline.io import read_rgb
from pipeline.sources import collect_sources, load_source
from pipeline.sources.bundled import bundled_image_paths
from pipeline.sources.procedural import SCREEN_KINDS, render_screen_content


def test_bundled_photos_are_found_without_download():
    names = [name for name, _ in bundled_image_paths()]
    assert len(names) >= 15
    assert "skimage-astronaut" in names and "matplotlib-grace_hopper" in names


@pytest.mark.parametrize("kind", SCREEN_KINDS)
def test_procedural_screens_are_deterministic_and_not_blank(kind):
    a = render_screen_content(kind, np.random.default_rng(11))
    b = render_screen_content(kind, np.random.default_rng(11))
    assert a.shape == (512, 512, 3) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes()
    assert a.std() > 5


def test_folder_sources_skip_unreadable_files_and_convert_modes(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((32, 32), 100, np.uint8)).save(folder / "gray.png")
    Image.fromarray(np.full((32, 32, 4), 200, np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(np.full((32, 32), 60000, np.uint16)).save(folder / "deep.png")
    Image.fromarray(np.full((32, 32, 3), 10, np.uint8)).convert("P").save(folder / "palette.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    Image.fromarray(np.full((32, 32, 3), 10, np.uint8)).save(folder / b"caf\xe9.png".decode("utf-8", "surrogateescape"))
    specs, skipped = collect_sources(False, 0, [folder])
    assert sorted(s.source_id for s in specs) == [
        "folder/photos/alpha.png", "folder/photos/deep.png", "folder/photos/gray.png", "folder/photos/palette.png"]
    # a name that is not UTF-8 could go into no manifest: skipped, and said readably
    assert [s.path for s in skipped] == [str(folder / "broken.jpg"), f"{folder}/caf\\xe9.png"]
    assert skipped[1].reason == "its file name is not UTF-8 (from an older system or zip?): rename it"
    for spec in specs:
        image = load_source(spec, 0)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert read_rgb(folder / "deep.png")[0, 0, 0] == round(60000 / 65535 * 255)



def test_folder_sources_of_the_same_name_have_ids_of_their_own(tmp_path):
    for path in ("one/photos/a/x.png", "one/photos/b/x.png", "one/photos/y.png", "two/photos/y.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 10, np.uint8)).save(tmp_path / path)
    specs, _ = collect_sources(False, 0, [tmp_path / "one/photos", tmp_path / "two/photos"])
    # before: folder/photos/x.png twice and folder/photos/y.png twice, four photos counted and split as two
    assert [s.source_id for s in specs] == ["folder/photos/a/x.png", "folder/photos/b/x.png", "folder/photos/y.png",
                                            "folder/photos-2/y.png"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputDataError, match="source folder does not exist: .*nowhere"):
        collect_sources(True, 0, [tmp_path / "nowhere"])


def test_natural_scenes_cover_the_canvas_with_a_falling_spectrum():
    from pipeline.sources.procedural import natural_scene

    scene = natural_scene(np.random.default_rng(5)).astype(float).mean(axis=2)
    power = np.abs(np.fft.fft2(scene - scene.mean())) ** 2
    radius = np.hypot(np.fft.fftfreq(512)[:, None], np.fft.fftfreq(512)[None, :])
    coarse, fine = power[(radius > 0.01) & (radius < 0.02)].mean(), power[(radius > 0.2) & (radius < 0.4)].mean()
    assert coarse > 100 * fine  # natural images: power falls steeply with frequency
    blocks = scene.reshape(16, 32, 16, 32).std(axis=(1, 3))
    assert (blocks > 1).mean() > 0.5  # detail nearly everywhere, not a flat background with a few shapes

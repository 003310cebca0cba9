"""Screen falloff: a known field is found on a screen-like page and undone; pages without one are left alone."""

import numpy as np
import pytest

from pipeline.falloff import (
    TO_LINEAR,
    FalloffField,
    correct_falloff,
    estimate_falloff,
    linear_luma,
    undo_falloff,
)


def _page(height: int = 270, width: int = 480, seed: int = 0) -> np.ndarray:
    """A light page with dark lines of 'text' and a grey panel: flat areas and sharp edges, as screens show."""
    rng = np.random.default_rng(seed)
    page = np.full((height, width, 3), (225, 228, 232), dtype=np.uint8)
    page[:, : width // 5] = (70, 80, 95)  # a dark sidebar: a level change, not a field
    for top in range(20, height - 20, 18):
        for left in range(width // 5 + 15, width - 60, 70):
            page[top:top + 7, left:left + rng.integers(25, 60)] = (30, 30, 35)
    noise = rng.normal(0, 1.5, page.shape)
    return np.clip(page + noise, 0, 255).astype(np.uint8)


def _with_field(image: np.ndarray, field: FalloffField) -> np.ndarray:
    """`image` times the light field, in linear light (as a screen's falloff darkens a photo)."""
    light = np.exp(field.log_light(*image.shape[:2]))[..., None]
    linear = TO_LINEAR[image] * light
    encoded = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.clip(linear, 0, 1) ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(encoded * 255), 0, 255).astype(np.uint8)


def _relative_to_centre(image: np.ndarray) -> np.ndarray:
    """The linear luma of the page's white, over its centre's: what a falloff changes."""
    luma = linear_luma(image)
    centre_y, centre_x = luma.shape[0] // 2, luma.shape[1] // 2
    return luma / np.median(luma[centre_y - 5:centre_y + 5, centre_x - 5:centre_x + 5])


def test_a_known_bowl_and_tilt_are_found_on_a_page_and_undone():
    page = _page()
    field = FalloffField(curvature=-0.35, tilt_x=0.12, tilt_y=-0.1)
    photo = _with_field(page, field)
    found = estimate_falloff(photo)
    assert found.curvature == pytest.approx(field.curvature, abs=0.04)
    assert found.tilt_x == pytest.approx(field.tilt_x, abs=0.03)
    assert found.tilt_y == pytest.approx(field.tilt_y, abs=0.03)
    undone = undo_falloff(photo, found, 1.0)
    # up to the exposure kept (the photo's mean luma), the page is flat again: the corners as bright as the centre
    white = page[..., 1] > 200
    assert np.ptp(_relative_to_centre(photo)[white]) > 0.25
    assert np.ptp(np.percentile(_relative_to_centre(undone)[white], [1, 99])) < 0.08
    half = undo_falloff(photo, found, 0.5)
    assert np.ptp(_relative_to_centre(undone)[white]) < np.ptp(_relative_to_centre(half)[white]) < np.ptp(
        _relative_to_centre(photo)[white])


def test_a_page_without_falloff_is_left_as_it_was_give_or_take_a_code():
    page = _page(seed=3)
    found = estimate_falloff(page)
    assert max(abs(found.curvature), abs(found.tilt_x), abs(found.tilt_y)) < 0.02
    assert np.abs(undo_falloff(page, found, 0.5).astype(int) - page).max() <= 2


def test_the_photos_mean_luma_stays_where_it_was():
    photo = _with_field(_page(seed=1), FalloffField(-0.4, 0.0, 0.2))
    undone = undo_falloff(photo, estimate_falloff(photo), 1.0)
    assert linear_luma(undone).mean() == pytest.approx(linear_luma(photo).mean(), rel=0.01)
    assert not np.array_equal(undone, photo)


def test_a_photo_brighter_towards_its_edges_gets_no_bowl():
    photo = _with_field(_page(seed=2), FalloffField(curvature=0.3))
    assert estimate_falloff(photo).curvature == 0.0


def test_an_off_centre_crop_of_a_bowl_is_fitted_as_a_bowl_and_a_tilt():
    page = _page(540, 960, seed=4)
    frame = _with_field(page, FalloffField(curvature=-0.4))
    crop, truth = frame[:270, :480], page[:270, :480]  # the top-left quarter: darkest towards its top-left corner
    found = estimate_falloff(crop)
    assert found.tilt_x > 0.05 and found.tilt_y > 0.05  # brighter towards the frame's centre, down and right
    white = truth[..., 1] > 200
    before = np.ptp(np.percentile(_relative_to_centre(crop)[white], [1, 99]))
    assert np.ptp(np.percentile(_relative_to_centre(undo_falloff(crop, found, 1.0))[white], [1, 99])) < before / 2


def test_without_flat_areas_there_is_no_field_and_nothing_changes():
    blocks = np.random.default_rng(5).integers(20, 236, (25, 38, 1), dtype=np.uint8)
    texture = np.ascontiguousarray(blocks.repeat(8, 0).repeat(8, 1).repeat(3, 2)[:200, :300])  # no flat area at 128 px
    assert estimate_falloff(texture) == FalloffField()
    assert undo_falloff(texture, FalloffField(), 0.5) is texture


def test_strength_zero_returns_the_restored_image_itself():
    photo = _with_field(_page(), FalloffField(-0.3))
    restored = photo.copy()
    assert correct_falloff(restored, photo, 0.0) is restored


def test_the_field_is_estimated_on_the_photo_and_undone_on_the_restored_image():
    photo = _with_field(_page(seed=6), FalloffField(-0.3, 0.05, 0.0))
    restored = np.clip(photo.astype(int) + 3, 0, 255).astype(np.uint8)  # any restoration that keeps the light
    np.testing.assert_array_equal(correct_falloff(restored, photo, 0.5),
                                  undo_falloff(restored, estimate_falloff(photo), 0.5))

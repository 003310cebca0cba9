"""The moiré layer bank: slots drawn from the seed alone, reused, oriented, and the bytes order-free."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

import pipeline.moire.layer_bank as layer_bank
from pipeline.config import ParamsError, parse_params
from pipeline.data.on_the_fly import SyntheticPairStream
from pipeline.data.synthetic import render_pair, source_for_pair
from pipeline.moire.layer_bank import SLOT_FIELDS, LayerBank, orient, oriented_pose
from pipeline.moire.optics import camera_homography
from pipeline.moire.simulate import (
    CaptureParams, content_batch, sample_capture_params, simulate_batch, simulate_capture,
)
from pipeline.sources import collect_sources, load_source


@pytest.fixture
def banked(tiny_raw):
    tiny_raw["synthesize"]["moire_layer_bank"] = 3
    return parse_params(tiny_raw)


@pytest.fixture(autouse=True)
def fresh_banks():
    layer_bank._banks.clear()  # each test starts as a new process does
    yield
    layer_bank._banks.clear()


def _same(a, b) -> bool:
    """Equal, NaN counting as equal to NaN (a manifest's absent values)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))


def _specs(cfg):
    return collect_sources(cfg.sources.bundled, cfg.sources.procedural, cfg.sources.folders)[0]


def _render(params, order):
    cfg = params.synthesize
    specs = _specs(cfg)
    return {i: render_pair(i, specs[source_for_pair(i, cfg.n_pairs, len(specs))], cfg, params.seed) for i in order}


def test_pairs_take_their_slots_geometry_and_share_few_layers(banked, monkeypatch):
    rendered = []
    real = layer_bank.moire_layer
    monkeypatch.setattr(layer_bank, "moire_layer", lambda *a, **k: rendered.append(1) or real(*a, **k))
    pairs = _render(banked, range(8))
    bank = LayerBank(banked.synthesize, banked.seed)
    records = [record for _, _, record in pairs.values()]
    used = {r["layer_slot"] for r in records}
    assert used <= {0, 1, 2} and len(rendered) == len(used) < len(records)  # one render a slot, however many use it
    assert all(0 <= r["layer_orientation"] < 8 for r in records)
    for record in records:
        slot = bank.geometry(record["layer_slot"])
        pose = ("rotation_deg", "tilt_direction_deg")
        # (the defocus and demosaic columns are absent when not configured: the slot holds their defaults)
        assert all(_same(record.get(name, getattr(CaptureParams, name, None)), getattr(slot, name))
                   for name in SLOT_FIELDS if name not in pose)
        expected = oriented_pose(slot.rotation_deg, slot.tilt_direction_deg, record["layer_orientation"])
        assert (record["rotation_deg"], record["tilt_direction_deg"]) == pytest.approx(expected)
    moires = [moire for moire, _, _ in pairs.values()]
    assert len({m.tobytes() for m in moires}) == 8  # content and noise stay each pair's own


def test_bytes_do_not_depend_on_which_pair_renders_a_slot_first(banked):
    forward = _render(banked, range(6))
    layer_bank._banks.clear()
    backward = _render(banked, reversed(range(6)))
    for i in range(6):
        assert np.array_equal(forward[i][0], backward[i][0]) and np.array_equal(forward[i][1], backward[i][1])
        assert forward[i][2].keys() == backward[i][2].keys()
        assert all(_same(forward[i][2][key], backward[i][2][key]) for key in forward[i][2])


def test_moire_free_captures_take_no_slot(tiny_raw):
    tiny_raw["synthesize"].update(moire_layer_bank=3, moire_free_fraction=0.5)
    cfg = parse_params(tiny_raw).synthesize
    bank, rng = LayerBank(cfg, 0), np.random.default_rng(3)
    captures = [bank.assign(sample_capture_params(cfg, (256, 256), rng), (256, 256), rng) for _ in range(16)]
    assert {c.moire_free for c in captures} == {True, False}
    assert all((c.layer_slot is None) == c.moire_free for c in captures)


@pytest.mark.parametrize("physics", [{}, {"optics": {"defocus_spread": [1.0, 2.0]}, "isp": {"demosaic": ["gradient"]},
                                      "sensor": {"crosstalk": [0.1, 0.3]}}])
def test_an_upright_slot_layer_is_the_layer_the_capture_would_render_itself(tiny_raw, physics):
    tiny_raw["synthesize"]["moire_layer_bank"] = 3
    for section, values in physics.items():  # a slot carries its defocus, demosaic and crosstalk like its geometry
        tiny_raw["synthesize"].setdefault(section, {}).update(values)
    banked = parse_params(tiny_raw)
    cfg = banked.synthesize
    source = load_source(_specs(cfg)[0], banked.seed)
    rng = np.random.default_rng(3)
    bank = LayerBank(cfg, banked.seed)
    capture = bank.assign(sample_capture_params(cfg, source.shape[:2], rng), source.shape[:2], rng)
    slot = bank.geometry(capture.layer_slot)
    assert (capture.defocus_spread, capture.demosaic) == (slot.defocus_spread, slot.demosaic)
    assert capture.crosstalk == slot.crosstalk or np.isnan(slot.crosstalk) and np.isnan(capture.crosstalk)
    assert capture.demosaic == physics.get("isp", {}).get("demosaic", [None])[0]  # the physics is in effect
    capture = replace(capture, layer_orientation=0, rotation_deg=slot.rotation_deg,
                      tilt_direction_deg=slot.tilt_direction_deg)
    with_bank = simulate_capture(source, capture, cfg.size, cfg.optics.supersample, bank)
    own = simulate_capture(source, replace(capture, layer_slot=None, layer_orientation=None), cfg.size,
                           cfg.optics.supersample)
    assert np.array_equal(with_bank[0], own[0]) and np.array_equal(with_bank[1], own[1])
    turned = simulate_capture(source, replace(capture, layer_orientation=1), cfg.size, cfg.optics.supersample, bank)
    assert not np.array_equal(turned[0], own[0])


def test_orientations_are_the_eight_symmetries_of_the_square():
    layer = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    oriented = [orient(layer, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in oriented}) == 8
    assert torch.equal(oriented[0], layer)
    assert torch.equal(oriented[1], torch.rot90(layer, 1, dims=(-2, -1)))
    assert torch.equal(oriented[4], torch.flip(layer, dims=(-1,)))


@pytest.mark.parametrize("orientation", range(8))
def test_the_oriented_pose_warps_the_content_as_the_oriented_layer_shows_the_screen(orientation):
    """G·H(θ, φ) = H(θ', φ')·G in centred coordinates, G the map of the frame `orient` applies: the turned layer is
    the layer of the screen (turned alike: a square grid's symmetry) seen with the oriented pose."""
    centred = np.stack(np.meshgrid(np.arange(3) - 1.0, np.arange(3) - 1.0, indexing="xy"))  # (x, y) of each pixel
    moved = orient(torch.from_numpy(centred), orientation).numpy()  # at each new place, where it came from
    inverse = np.stack([moved[:, 1, 2], moved[:, 2, 1]], axis=1)  # images of the new unit vectors x and y
    frame_map = np.eye(3)
    frame_map[:2, :2] = np.linalg.inv(inverse)

    def pose_map(rotation: float, direction: float) -> np.ndarray:
        """The display → frame homography without its centring translations."""
        side, frame = 40, 64
        to_frame = np.array([[1, 0, frame / 2], [0, 1, frame / 2], [0, 0, 1]])
        from_display = np.array([[1, 0, side / 2], [0, 1, side / 2], [0, 0, 1]])
        return np.linalg.inv(to_frame) @ camera_homography(side, frame, 0.9, rotation, 0.12, direction) @ from_display

    rotation, direction = oriented_pose(17.0, 40.0, orientation)
    assert np.allclose(frame_map @ pose_map(17.0, 40.0), pose_map(rotation, direction) @ frame_map)


def test_crops_stay_inside_their_source_and_keep_their_scale(banked):
    cfg = banked.synthesize
    bank = LayerBank(cfg, banked.seed)
    rng = np.random.default_rng(1)
    for shape in [(300, 200), (90, 400), (1200, 1200)]:
        for _ in range(50):
            capture = sample_capture_params(cfg, shape, rng)
            assigned = bank.assign(capture, shape, rng)
            assert 0 <= assigned.crop_x <= shape[1] - assigned.crop_side
            assert 0 <= assigned.crop_y <= shape[0] - assigned.crop_side
            if assigned.crop_side < min(shape):  # unless the source runs out, the source-to-display scale stays
                scale = capture.crop_side / capture.display_size
                assert assigned.crop_side / assigned.display_size == pytest.approx(scale, rel=0.02, abs=1 / assigned.display_size)


def test_a_batch_mixing_drawn_patterns_banked_layers_and_sizes_renders_each_capture_as_alone(tiny_raw):
    tiny_raw["synthesize"].update(moire_layer_bank=2, patterns={"fraction": 0.5})
    params = parse_params(tiny_raw)
    cfg = params.synthesize
    bank = LayerBank(cfg, params.seed)
    specs = _specs(cfg)
    rng = np.random.default_rng(5)
    sources, captures = [], []
    while len({c.pattern is None for c in captures}) < 2 or len(captures) < 4:
        source = load_source(specs[len(captures) % len(specs)], params.seed)
        sources.append(source)
        captures.append(bank.assign(sample_capture_params(cfg, source.shape[:2], rng), source.shape[:2], rng))
    assert {c.layer_slot is None for c in captures} == {True, False}  # drawn patterns take no slot
    together = simulate_batch(content_batch(sources, captures), captures, cfg.size, cfg.optics.supersample, bank)
    for i, (source, capture) in enumerate(zip(sources, captures)):
        alone = simulate_batch(content_batch([source], [capture]), [capture], cfg.size, cfg.optics.supersample, bank)
        # Content padded to the batch's largest display and float reassociation move a rare value by far less than a level.
        assert (together[0][i] - alone[0][0]).abs().max() <= 1 / 255 + 1e-6
        assert torch.allclose(together[1][i], alone[1][0], atol=1e-4)


def test_on_the_fly_batches_use_the_bank_reproducibly(banked):
    def batches():
        layer_bank._banks.clear()
        stream = SyntheticPairStream(banked.synthesize, banked.seed, batch_size=3, device="cpu")
        return list(itertools.islice(iter(stream), 2))

    first, again = batches(), batches()
    for (moire, clean), (moire2, clean2) in zip(first, again):
        assert torch.equal(moire, moire2) and torch.equal(clean, clean2)
    assert not torch.equal(first[0][0], first[1][0])


def test_a_bank_without_layers_names_the_key_and_what_is_allowed(tiny_raw):
    tiny_raw["synthesize"].update(moire_layer_bank=32, moire_model="render")
    with pytest.raises(ParamsError) as error:
        parse_params(tiny_raw)
    message = str(error.value)
    assert "synthesize.moire_layer_bank = 32" in message and "moire_model: layer" in message
    assert "\n" not in message


def test_a_capture_from_a_slot_needs_its_bank(banked):
    cfg = banked.synthesize
    source = load_source(_specs(cfg)[0], banked.seed)
    rng = np.random.default_rng(0)
    capture = LayerBank(cfg, banked.seed).assign(sample_capture_params(cfg, source.shape[:2], rng), source.shape[:2], rng)
    with pytest.raises(ValueError, match="layer bank"):
        simulate_capture(source, capture, cfg.size, cfg.optics.supersample)

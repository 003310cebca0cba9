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
from pipeline.moire.layer_bank import SLOT_FIELDS, LayerBank, orient
from pipeline.moire.simulate import sample_capture_params, simulate_capture
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
    assert len(rendered) <= 3  # each slot's layer is rendered once, however many pairs use it
    bank = LayerBank(banked.synthesize, banked.seed)
    records = [record for _, _, record in pairs.values()]
    assert {r["layer_slot"] for r in records} <= {0, 1, 2}
    assert all(0 <= r["layer_orientation"] < 8 for r in records)
    for record in records:
        slot = bank.geometry(record["layer_slot"])
        assert all(_same(record[name], getattr(slot, name)) for name in SLOT_FIELDS)
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


def test_an_upright_slot_layer_is_the_layer_the_capture_would_render_itself(banked):
    cfg = banked.synthesize
    source = load_source(_specs(cfg)[0], banked.seed)
    rng = np.random.default_rng(3)
    bank = LayerBank(cfg, banked.seed)
    capture = replace(bank.assign(sample_capture_params(cfg, source.shape[:2], rng), source.shape[:2], rng),
                      layer_orientation=0)
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

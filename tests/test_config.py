from pathlib import Path

import pytest
import yaml

from pipeline.config import Params, flatten, load_params, parse_params, read_params_file
from pipeline.errors import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.train.model in ("simple", "unet")
    assert params.registration.model_name == "demoire"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"train": {"epochs": 0}}, "params.yaml: train.epochs = 0: Input should be greater than or equal to 1"),
        ({"train": {"model": "resnet"}}, "params.yaml: train.model = 'resnet': Input should be 'simple', 'unet' or 'mscale'"),
        ({"synthesize": {"moire_free_fraction": 1.5}},
         "params.yaml: synthesize.moire_free_fraction = 1.5: Input should be less than or equal to 1"),
        ({"synthesize": {"optics": {"tilt": [0.3, 0.1]}}},
         "params.yaml: synthesize.optics.tilt = [0.3, 0.1]: range minimum 0.3 is greater than its maximum 0.1"),
        ({"synthesize": {"display": {"fill_factor": [0.5, 1.5]}}},
         "params.yaml: synthesize.display.fill_factor = [0.5, 1.5]: range must lie within [0.05, 1], got [0.5, 1.5]"),
        ({"synthesize": {"isp": {"jpeg_quality": [0, 90]}}},
         "params.yaml: synthesize.isp.jpeg_quality = [0, 90]: range must lie within [1, 100], got [0.0, 90.0]"),
        ({"synthesize": {"display": {"content_scale": [0.0, 2.0]}}},
         "params.yaml: synthesize.display.content_scale = [0.0, 2.0]: range must lie within [0.1, 8], got [0.0, 2.0]"),
        ({"synthesize": {"display": {"pixel_pitch_mm": [-0.2, 0.3]}}},
         "params.yaml: synthesize.display.pixel_pitch_mm = [-0.2, 0.3]: range must lie within [0.01, 5], got [-0.2, 0.3]"),
        ({"synthesize": {"preset": "moire"}},
         "params.yaml: synthesize.preset = 'moire': preset 'moire' is neither a built-in preset (default, fine, coarse, document, classic) nor a preset file (.yaml or .yml)"),
        ({"synthesize": {"display": {"subpixel_layouts": ["delta"]}}},
         "params.yaml: synthesize.display.subpixel_layouts[0] = 'delta': "
         "Input should be 'rgb_stripe', 'bgr_stripe' or 'pentile'"),
        ({"train": {"loss": "ssim"}},
         "params.yaml: train.loss = 'ssim': Input should be 'mse', 'l1', 'charbonnier', 'fft' or 'psnr'"),
        ({"train": {"device": "tpu"}}, "params.yaml: train.device = 'tpu': Input should be 'auto', 'cpu' or 'cuda'"),
        ({"train": {"correction_width": -4}},
         "params.yaml: train.correction_width = -4: Input should be greater than or equal to 0"),
        ({"infer": {"tile_size": 64, "tile_overlap": 32}},
         "params.yaml: infer: tile_overlap 32 must be less than half of tile_size 64"),
        ({"infer": {"max_pixels": 300_000_000}},
         "params.yaml: infer.max_pixels = 300000000: Input should be less than or equal to 200000000"),
        ({"infer": {"tile_size": 31}},
         "params.yaml: infer.tile_size = 31: Input should be greater than or equal to 32"),
        ({"preprocess": {"val_fraction": 0.5}},
         "params.yaml: preprocess.val_fraction = 0.5: Input should be less than 0.5"),
        ({"infer": {"max_side": 16}}, "params.yaml: infer.max_side = 16: allowed: 64 to 65536, or null for full size"),
        ({"infer": {"max_side": 0}}, "params.yaml: infer.max_side = 0: allowed: 64 to 65536, or null for full size"),
        ({"infer": {"falloff": 1.5}}, "params.yaml: infer.falloff = 1.5: Input should be less than or equal to 1"),
        ({"evaluate": {"real_sets": [{"name": "fhdmi", "path": "/a"}, {"name": "tip", "path": "/a"},
                                     {"name": "fhdmi", "path": "/b"}]}},
         "params.yaml: evaluate.real_sets[2].name = 'fhdmi': duplicate name; every real set needs its own"),
        ({"evaluate": {"real_sets": [{"name": "a", "path": "/a", "include": "fhdmi_[0-9*"}]}},
         "params.yaml: evaluate.real_sets[0].include = 'fhdmi_[0-9*': unclosed [ in the glob; "
         "allowed: a glob on pair names such as fhdmi_* or test/*"),
        ({"evaluate": {"real_sets": [{"name": "a", "path": "/a", "include": ""}]}},
         "params.yaml: evaluate.real_sets[0].include = '': String should have at least 1 character"),
        ({"evaluate": {"real_sets": [{"name": "real photos", "path": "/a"}]}},
         "params.yaml: evaluate.real_sets[0].name = 'real photos': String should match pattern '^[A-Za-z0-9_.-]{1,64}$'"),
        ({"evaluate": {"real_sets": [{"name": "tone", "path": "/a"}]}},
         "params.yaml: evaluate.real_sets[0].name = 'tone': 'tone' is reserved (real_tone_psnr would be the key of a "
         "mean over sets); choose another name"),
        ({"evaluate": {"real_sets": [{"name": "identity", "path": "/a"}]}},
         "params.yaml: evaluate.real_sets[0].name = 'identity': 'identity' is reserved (real_identity_psnr would be "
         "the key of a mean over sets); choose another name"),
        ({"evaluate": {"real_sets": [{"name": "a", "path": ""}]}},
         "params.yaml: evaluate.real_sets[0].path = '': an empty path names the project folder itself; "
         "write the dataset's folder"),
        ({"evaluate": {"real_sets": [{"name": "a", "path": "/a", "limit": 0}]}},
         "params.yaml: evaluate.real_sets[0].limit = 0: Input should be greater than or equal to 1"),
        ({"synthesize": {"dask_address": "http://scheduler:8786"}},
         "params.yaml: synthesize.dask_address = 'http://scheduler:8786': not a Dask scheduler address: use "
         "tcp://host:8786 (schemes: tcp, tls, ucx, ws, wss, inproc)"),
    ],
)
def test_invalid_values_name_key_value_and_what_is_allowed(raw, expected):
    with pytest.raises(ParamsError) as info:
        parse_params(raw, source="params.yaml")
    assert str(info.value) == expected
    assert "\n" not in str(info.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ParamsError) as info:
        parse_params({"register": {"modelname": "x"}}, source="params.yaml")
    assert str(info.value) == ("params.yaml: register.modelname = 'x': unknown key; allowed keys here: experiment, "
                               "model_name, promotion_margin_db, require_gain_over_input, ssim_tolerance")


def test_a_pipelines_patches_must_fit_its_synthetic_pairs_unless_none_are_cut_from_them(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"synthesize": {"size": 48}, "train": {"patch_size": 64}}))
    with pytest.raises(ParamsError) as info:
        load_params(params)
    assert str(info.value) == (f"{params}: train.patch_size = 64: larger than synthesize.size 48, the pairs' side "
                               "it is cut from; choose at most 48 or raise synthesize.size")
    on_the_fly = {"synthesize": {"size": 48}, "train": {"patch_size": 64, "synthetic_pairs_per_epoch": 16}}
    real_only = {"synthesize": {"size": 48}, "train": {"patch_size": 64}, "preprocess": {
        "synthetic": False, "datasets": [{"path": "/real", "split": split} for split in ("train", "val", "test")]}}
    for raw in (on_the_fly, real_only):
        params.write_text(yaml.safe_dump(raw))
        assert load_params(params).train.patch_size == 64
    assert parse_params({"synthesize": {"size": 48}}).synthesize.size == 48  # a synthesis alone: no training


def test_a_bad_value_from_a_preset_file_names_that_file_and_its_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mine.yaml").write_text("base: default\noptics:\n  blurr: 1\n")
    with pytest.raises(ParamsError) as info:
        parse_params({"synthesize": {"preset": "mine.yaml", "optics": {"blurr": 2}}}, source="params.yaml")
    assert str(info.value).startswith("params.yaml: synthesize.optics.blurr = 2: unknown key")  # the user's own
    with pytest.raises(ParamsError) as info:
        parse_params({"synthesize": {"preset": "mine.yaml"}}, source="params.yaml")
    assert str(info.value).startswith("mine.yaml (the preset file params.yaml names): optics.blurr = 1: unknown key")
    Path("mine.yaml").write_text("base: default\noptics:\n  blur_sigma: [2.0, 1.0]\n")
    with pytest.raises(ParamsError) as info:
        parse_params({"synthesize": {"preset": "mine.yaml"}}, source="params.yaml")
    assert str(info.value) == ("mine.yaml (the preset file params.yaml names): optics.blur_sigma = [2.0, 1.0]: "
                               "range minimum 2.0 is greater than its maximum 1.0")
    parse_params({"synthesize": {"preset": "mine.yaml", "optics": {"blur_sigma": [0.5, 1.0]}}})  # overridden: valid
    with pytest.raises(ParamsError) as info:  # named by a command's option (demoire synthesize --preset)
        parse_params({"synthesize": {"preset": "mine.yaml"}}, source="options", options={"synthesize.preset": "--preset"})
    assert str(info.value).startswith("mine.yaml (the preset file --preset names): optics.blur_sigma = [2.0, 1.0]")


def test_unknown_top_level_section():
    with pytest.raises(ParamsError, match=r"^p: trian = \{\}: unknown key; allowed keys here: evaluate, infer, preprocess, profile, register, seed"):
        parse_params({"trian": {}}, source="p")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_merge_keys_apply_as_in_safe_load_and_a_key_written_beside_them_overrides(tmp_path):
    # real sets share most of their keys: one anchored set, the next merging it (the schema allows no spare key)
    path = tmp_path / "params.yaml"
    path.write_text("evaluate:\n  real_sets:\n"
                    "    - &fhdmi {name: fhdmi, path: /data/FHDMi, layout: fhdmi, limit: 3}\n"
                    "    - <<: *fhdmi\n      name: fhdmi_test\n      split: test\n")
    assert read_params_file(path) == yaml.safe_load(path.read_text())
    real = load_params(path).evaluate.real_sets
    assert [(r.name, str(r.path), r.layout, r.split, r.limit) for r in real] == [
        ("fhdmi", "/data/FHDMi", "fhdmi", None, 3), ("fhdmi_test", "/data/FHDMi", "fhdmi", "test", 3)]


@pytest.mark.parametrize("text, line", [
    ("train:\n  epochs: 2\n  epochs: 3\n", 3),
    ("base: &b {epochs: 2}\ntrain:\n  <<: *b\n  lr: 0.01\n  lr: 0.02\n", 5),  # a merge excuses no explicit twin
    ("base: &b {epochs: 2, epochs: 3}\ntrain: {<<: *b}\n", 1),
])
def test_a_key_written_twice_is_refused_merge_keys_or_not(tmp_path, text, line):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=rf"params.yaml: line {line}: key '(epochs|lr)' given twice in one section"):
        read_params_file(path)


def test_an_error_shows_a_long_value_cut_to_a_line():
    with pytest.raises(ParamsError) as info:
        parse_params({"seed": list(range(100_000))}, source="params.yaml")
    shown = repr(list(range(100_000)))
    assert str(info.value) == (f"params.yaml: seed = {shown[:80]}… ({len(shown) - 80:,} characters more): "
                               "Input should be a valid integer")
    with pytest.raises(ParamsError, match=r"^p: trian = 'x{79}… \(922 characters more\): unknown key"):
        parse_params({"trian": "x" * 1000}, source="p")


def test_an_alias_bomb_or_an_endless_alias_is_refused_before_it_is_built(tmp_path):
    # 400 bytes, 9**7 values once expanded: its error used to echo all 17.5 MB of them
    lists = ["&a [1,1,1,1,1,1,1,1,1]"] + [f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdef", "bcdefg")]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"seed: [{', '.join(lists)}]\n")
    with pytest.raises(ParamsError, match=r"bomb.yaml: its aliases \(\*name\) expand it to over 100,000 values"):
        load_params(bomb)
    endless = tmp_path / "endless.yaml"
    endless.write_text("seed: 1\ntrain:\n  loss: &l {mse: *l}\n")  # was a RecursionError
    with pytest.raises(ParamsError, match="endless.yaml: line 3: an alias inside its own anchor makes an endless"):
        load_params(endless)


def test_flatten_uses_dotted_section_names():
    flat = flatten(Params())
    assert flat["register.model_name"] == "demoire"
    assert flat["synthesize.optics.distance_mm"] == "[300.0, 800.0]"
    assert flat["train.epochs"] == "30"


def test_screen_kinds_accepted_by_params_are_the_ones_drawn():
    from pipeline.sources.procedural import SCREEN_KINDS

    assert tuple(Params().synthesize.sources.screen_kinds) == SCREEN_KINDS


def test_real_pairs_instead_of_synthetic_must_fill_every_split():
    with pytest.raises(ParamsError, match="without synthetic pairs, preprocess.datasets must fill every split; none goes to test, val"):
        parse_params({"preprocess": {"synthetic": False, "datasets": [{"path": "/data/x", "split": "train"}]}})
    assert parse_params({"preprocess": {"datasets": [{"path": "/data/x", "split": "train"}]}}).preprocess.synthetic


def test_profiles_fill_in_what_params_yaml_does_not_write():
    from typing import get_args

    from pipeline.config import ProfileName
    from pipeline.profiles import PROFILES

    assert set(get_args(ProfileName)) == set(PROFILES)
    long = parse_params({"profile": "cpu-long", "train": {"epochs": 3}, "synthesize": {"n_pairs": 10}})
    assert (long.train.epochs, long.synthesize.n_pairs) == (3, 10)  # written keys win
    assert long.train.patch_size == PROFILES["cpu-long"]["train"]["patch_size"]
    assert long.synthesize.size == PROFILES["cpu-long"]["synthesize"]["size"]
    assert parse_params({}).profile == "quick"
    # null (as params.yaml writes the profile's keys) is the profile's value, or the default it leaves
    nulls = parse_params({"profile": "cpu-long", "train": {"lr": None, "ema_decay": None, "loss": None}})
    assert (nulls.train.lr, nulls.train.ema_decay) == (PROFILES["cpu-long"]["train"]["lr"], 0.999)
    assert (nulls.train.loss, nulls.train.correction) == ({"psnr": 1.0}, "full")
    assert (nulls.synthesize.moire_model, parse_params({}).synthesize.moire_model) == ("render", "layer")
    written = {"profile": "cpu-long", "synthesize": {"moire_model": "layer"}, "train": {"correction": "chroma"}}
    assert (parse_params(written).synthesize.moire_model, parse_params(written).train.correction) == ("layer", "chroma")
    assert parse_params({"profile": "cpu-long", "synthesize": {"preset": "classic"}}).synthesize.target_tone == "source"
    gpu = parse_params({"profile": "gpu"})
    assert (gpu.train.correction, gpu.synthesize.moire_model) == ("full", "render")  # cpu-long's physics
    assert parse_params({"train": {"correction_width": None}}).train.correction_width == 16.0  # quick's
    assert parse_params({"profile": "cpu-long"}).train.correction_width == 16.0
    assert parse_params({"profile": "gpu", "train": {"correction_width": None}}).train.correction_width == 0.0
    assert parse_params({"train": {"ema_decay": None}}).train.ema_decay == 0.0  # quick leaves it at the default
    assert parse_params({}).train.loss == {"psnr": 1.0}  # quick's
    assert parse_params({"train": {"loss": {"mse": 1.0}}}).train.loss == {"mse": 1.0}  # replaces it, not added to it
    assert parse_params({"profile": "gpu", "train": {"loss": {"l1": 1.0}}}).train.loss == {"l1": 1.0}
    shipped = load_params(ROOT / "params.yaml")
    assert (shipped.train.epochs, shipped.synthesize.n_pairs) == (30, 480)  # quick, through the nulls
    with pytest.raises(ParamsError, match=r"profile = 'fast': Input should be 'quick', 'cpu-long' or 'gpu'"):
        parse_params({"profile": "fast"})


def test_real_sets_take_globs_and_an_unknown_key_lists_their_keys():
    real = parse_params({"evaluate": {"real_sets": [
        {"name": "fhdmi", "path": "../shared/real-moire/paired", "include": "fhdmi_*"},
        {"name": "tip2018", "path": "/data/TIP2018", "layout": "tip2018", "split": "test", "include": "[!x]*", "limit": 3},
    ]}}).evaluate.real_sets
    assert [(r.name, r.include, r.limit, r.layout) for r in real] == [
        ("fhdmi", "fhdmi_*", None, "auto"), ("tip2018", "[!x]*", 3, "tip2018")]
    with pytest.raises(ParamsError) as info:
        parse_params({"evaluate": {"real_sets": [{"name": "a", "path": "/a", "glob": "*"}]}}, source="params.yaml")
    assert str(info.value) == ("params.yaml: evaluate.real_sets[0].glob = '*': unknown key; "
                               "allowed keys here: include, layout, limit, name, path, split")


@pytest.mark.parametrize(("raw", "message"), [
    ({"train": {"epochs": True}}, "train.epochs = True: a number is needed here, not true or false"),
    ({"train": {"synthetic_pairs_per_epoch": "yes"}}, "train.synthetic_pairs_per_epoch = 'yes': Input should be a valid integer"),
    ({"train": {"loss": {"psnr": True}}}, "train.loss.psnr = True: a number is needed here, not true or false"),
    ({"synthesize": {"display": {"gamma": [2.0, False]}}},
     "synthesize.display.gamma[1] = False: a number is needed here, not true or false"),
    ({"seed": False}, "seed = False: a number is needed here, not true or false"),
])
def test_true_or_false_is_no_number(raw, message):
    with pytest.raises(ParamsError) as info:
        parse_params(raw, "params.yaml")
    assert str(info.value).startswith(f"params.yaml: {message}")


def test_a_choice_or_text_given_true_or_false_says_what_is_allowed_and_amp_off_unquoted_is_off():
    with pytest.raises(ParamsError, match=r"^params.yaml: evaluate.device = True: Input should be 'auto', 'cpu' or 'cuda'$"):
        parse_params({"evaluate": {"device": True}}, "params.yaml")
    # `dvc exp run -S train.amp=off` writes `amp: off`, which YAML 1.1 reads as false
    assert parse_params(yaml.safe_load("train:\n  amp: off\n")).train.amp == "off"


def test_flags_stay_flags():
    params = parse_params({"train": {"compile": True, "resume": False}, "synthesize": {"sources": {"bundled": False}}})
    assert (params.train.compile, params.train.resume, params.synthesize.sources.bundled) == (True, False, False)


def test_a_source_folder_listed_twice_or_inside_another_is_refused(tmp_path):
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "photos")
    photos = str(tmp_path / "photos")
    alias = tmp_path / "alias"
    for folders, shown in [([photos, photos + "/"], f"{photos} and {photos} are one folder"),  # each was a folder
                           ([photos, str(alias)], f"{photos} and {alias} are one folder"),  # `photos`, then numbered
                           ([photos + "/sub", photos], f"{photos}/sub lies inside {photos}")]:  # apart: photos-2
        with pytest.raises(ParamsError) as info:
            parse_params({"synthesize": {"sources": {"folders": folders}}}, "params.yaml")
        assert str(info.value).endswith(f": {shown}: list each folder once, and no folder inside another"), info.value
    assert parse_params({"synthesize": {"sources": {"folders": [photos, str(tmp_path / "other")]}}})


def test_a_synthesis_without_screen_contents_is_refused_before_it_starts():
    with pytest.raises(ParamsError) as info:
        parse_params({"synthesize": {"sources": {"bundled": False, "procedural": 0}}}, "params.yaml")
    assert str(info.value) == ("params.yaml: synthesize.sources: no screen contents: bundled is false, procedural is 0 "
                               "and folders is empty; enable bundled, set procedural above 0 or list folders")


def test_pairs_rendered_on_the_fly_come_at_least_a_step_at_a_time():
    with pytest.raises(ParamsError) as info:
        parse_params({"train": {"synthetic_pairs_per_epoch": 7, "batch_size": 4, "processes": 2}}, "params.yaml")
    assert str(info.value) == ("params.yaml: train: synthetic_pairs_per_epoch 7 is less than one step of batch_size × "
                               "processes = 8 pairs; allowed: 0 (the stored pairs) or at least 8")
    assert parse_params({"train": {"synthetic_pairs_per_epoch": 8, "batch_size": 4, "processes": 2}})

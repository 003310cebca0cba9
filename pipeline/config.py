"""params.yaml as pydantic models, validated once at the edge; errors become one readable line."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.errors import ParamsError, first_line, shown_value

LossName = Literal["mse", "l1", "charbonnier", "fft", "psnr"]  # pipeline.training.losses.LOSSES; a test keeps them equal
# The procedural screen kinds (pipeline.sources.procedural.SCREEN_KINDS; a test keeps them equal).
ScreenKind = Literal["document", "code", "ui", "chart", "webpage", "scene"]


def _ordered(bounds: tuple[float, float]) -> tuple[float, float]:
    """Reject ranges whose minimum exceeds their maximum."""
    low, high = bounds
    if low > high:
        raise ValueError(f"range minimum {low} is greater than its maximum {high}")
    return bounds


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
"""A [min, max] pair sampled uniformly per pair."""


def _within(low: float, high: float) -> AfterValidator:
    """Validator: both ends of a range lie within [low, high]."""

    def check(bounds: tuple[float, float]) -> tuple[float, float]:
        if bounds[0] < low or bounds[1] > high:
            raise ValueError(f"range must lie within [{low:g}, {high:g}], got {list(bounds)}")
        return bounds

    return AfterValidator(check)


def _wants_number(annotation: Any) -> bool:
    """Whether a field's type is a number, or a list, range or mapping of numbers, and takes no flag (a section
    checks its own keys; a text or a choice reports true/false as pydantic does)."""
    def kinds(node: Any) -> set:
        if node in (int, float, bool):
            return {node}
        if get_origin(node) is Literal:
            return {"choice"}
        return set().union(*(kinds(arg) for arg in get_args(node))) if get_args(node) else {"other"}

    found = kinds(annotation)
    return bool(found & {int, float}) and bool not in found


def _flag_at(value: Any) -> list | None:
    """Where a raw value holds true/false: [] for the value itself, the index or key path into a list or
    mapping, None where it holds none."""
    items = enumerate(value) if isinstance(value, (list, tuple)) else value.items() if isinstance(value, dict) else ()
    for where, item in items:
        inner = _flag_at(item)
        if inner is not None:
            return [where, *inner]
    return [] if isinstance(value, bool) else None


def _leaf(value: Any, where: list) -> Any:
    """The item of a raw value at an index or key path."""
    for step in where:
        value = value[step]
    return value


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)  # keys by their written names only (`register`)

    @model_validator(mode="before")
    @classmethod
    def _no_flags_for_numbers(cls, raw: Any) -> Any:
        """Refuse true/false where a number is asked: pydantic would read them as 1 and 0 (`epochs: true`
        would train one epoch, `synthetic_pairs_per_epoch: yes` render one pair)."""
        if isinstance(raw, dict):
            for name, field in cls.model_fields.items():
                key = field.alias or name
                where = _flag_at(raw[key]) if key in raw else None
                if where is not None and _wants_number(field.annotation):
                    raise PydanticCustomError("flag_for_number", "a number is needed here, not true or false",
                                              {"at": [key, *where], "value": _leaf(raw[key], where)})
        return raw


class SourcesParams(Section):
    bundled: bool = True
    procedural: int = Field(96, ge=0, le=100_000)
    # Which procedural screen kinds to draw; all of them unless a preset narrows it.
    screen_kinds: Annotated[list[ScreenKind], Field(min_length=1)] = ["document", "code", "ui", "chart", "webpage", "scene"]
    folders: list[Path] = []

    @field_validator("folders")
    @classmethod
    def _each_folder_once(cls, folders: list[Path]) -> list[Path]:
        """A folder listed twice, or inside another listed one, would give its photos two source ids, so one photo
        could land in both the train and the test split."""
        real = [Path(os.path.realpath(folder)) for folder in folders]
        for i, j in itertools.combinations(range(len(real)), 2):
            if real[i] == real[j]:
                clash = f"{folders[i]} and {folders[j]} are one folder"
            elif real[i].is_relative_to(real[j]) or real[j].is_relative_to(real[i]):
                inner, outer = (i, j) if real[i].is_relative_to(real[j]) else (j, i)
                clash = f"{folders[inner]} lies inside {folders[outer]}"
            else:
                continue
            raise ValueError(f"{clash}: list each folder once, and no folder inside another")
        return folders

    @model_validator(mode="after")
    def _some_source(self) -> "SourcesParams":
        """Pairs need screen contents: refused here, not after a stage has started."""
        if not (self.bundled or self.procedural or self.folders):
            raise ValueError("no screen contents: bundled is false, procedural is 0 and folders is empty; "
                             "enable bundled, set procedural above 0 or list folders")
        return self


class DisplayParams(Section):
    # Sampled per pair from this list.
    subpixel_layouts: Annotated[list[Literal["rgb_stripe", "bgr_stripe", "pentile"]], Field(min_length=1)] = [
        "rgb_stripe", "bgr_stripe", "pentile"]
    pixel_pitch_mm: Annotated[Range, _within(0.01, 5.0)] = (0.18, 0.30)  # laptops to 27" monitors
    fill_factor: Annotated[Range, _within(0.05, 1.0)] = (0.6, 0.9)
    gamma: Annotated[Range, _within(1.0, 3.0)] = (2.1, 2.4)
    gamut: Annotated[Range, _within(0.5, 1.5)] = (0.9, 1.1)
    white_point: Annotated[Range, _within(-0.5, 0.5)] = (-0.06, 0.06)
    brightness: Annotated[Range, _within(0.05, 1.0)] = (0.85, 1.0)
    black_level: Annotated[Range, _within(0.0, 0.3)] = (0.0, 0.004)
    # Source pixels per display pixel: how large the screen shows its content. Below 1 the content is
    # magnified (a photo or page zoomed to fill the screen), above 1 shrunk.
    content_scale: Annotated[Range, _within(0.1, 8.0)] = (0.8, 2.0)


class OpticsParams(Section):
    # Camera distance and screen rotation are drawn from these ranges only where beat_period_px is null (the
    # `classic` preset); with a beat period (the default) each capture's follow from its period, below.
    distance_mm: Annotated[Range, _within(20.0, 10_000.0)] = (300.0, 800.0)
    focal_length_mm: Annotated[Range, _within(1.0, 200.0)] = (4.2, 6.0)  # phone main cameras
    rotation_deg: Annotated[Range, _within(-45.0, 45.0)] = (-6.0, 6.0)
    tilt: Annotated[Range, _within(0.0, 0.3)] = (0.0, 0.12)
    radial_distortion: Annotated[Range, _within(-0.3, 0.3)] = (-0.04, 0.04)
    blur_sigma: Annotated[Range, _within(0.0, 5.0)] = (0.3, 1.0)  # lens, camera pixels
    vignetting: Annotated[Range, _within(0.0, 0.9)] = (0.0, 0.35)
    # Sub-samples per camera pixel and axis; the subpixel layout is integrated analytically over each
    # sample's footprint, so 1 suffices once the frame is rendered at the camera's resolution.
    supersample: int = Field(1, ge=1, le=8)
    # Moiré datasets keep the shots whose moiré shows as bands. When set, each capture's distance
    # and rotation are chosen so the screen grid beats against the camera's (near display pitch 2/k
    # camera pixels, k in resonance_orders: 1 the colour moiré of the Bayer mosaic, 2 the luma
    # moiré of the full grid) with a period drawn log-uniform from this range, in output pixels.
    beat_period_px: Annotated[Range, _within(2.0, 10_000.0)] | None = (6.0, 120.0)
    resonance_orders: Annotated[list[Literal[1, 2, 3]], Field(min_length=1)] = [1, 2]
    # RMS contrast of the moiré layer (moire_model: layer), drawn per pair: the layer's deviation
    # from 1 is scaled to it. null keeps the contrast the grid, lens, sensor and ISP make.
    moire_contrast: Annotated[Range, _within(0.0, 2.0)] | None = None
    # A screen at a tilt is in focus along one line only: the lens blur grows away from it, by this
    # much (camera pixels, drawn per pair) a half-frame from it and beyond, so the moiré fades across
    # the frame as in real photos (docs/benchmarks.md). null: one blur over the whole frame.
    defocus_spread: Annotated[Range, _within(0.0, 5.0)] | None = None


class SensorParams(Section):
    pixel_pitch_um: Annotated[Range, _within(0.5, 50.0)] = (0.9, 1.5)  # 12–48 MP phone sensors
    # Light-sensitive fraction of the pixel pitch: below 1 the pixel integrates a narrower area,
    # which lets more of the display's subpixel frequency alias into moiré.
    aperture: Annotated[Range, _within(0.05, 1.0)] = (0.7, 1.0)
    # Display pixel pitch in dataset pixels. Real datasets are phone photos of 12–48 MP aligned to
    # the screen's content at its own resolution (about 1) or below it: the frame is rendered at
    # the camera's resolution and shrunk by pitch ratio / output_pitch (1 to max_downscale) to
    # `size`. null: render at `size` directly, no shrink.
    output_pitch: Annotated[Range, _within(0.1, 8.0)] | None = (0.6, 1.15)
    max_downscale: float = Field(4.0, ge=1.0, le=8.0)
    # true: auto-exposure meters the content's own light (no built-in brightening), and exposure_ev
    # is the error around it; false: exposure_ev is relative to a fixed exposure of the panel's white.
    auto_exposure: bool = True
    exposure_ev: Annotated[Range, _within(-4.0, 2.0)] = (-0.4, 0.4)
    # Share of each other primary's light a pixel's colour filter passes (drawn per pair); the ISP's colour
    # matrix undoes the mixing, so flat colours keep their hue, while a grid that aliases differently at the
    # red, green and blue sites gets its differences amplified into false colour across the channels, as a
    # phone's colour matrix does (diagonal 1.2–2.1 for 0.1–0.4). null: filters pass their own primary only.
    crosstalk: Annotated[Range, _within(0.0, 0.45)] | None = None
    shot_noise: Annotated[Range, _within(0.0, 0.1)] = (0.0005, 0.004)
    read_noise: Annotated[Range, _within(0.0, 0.1)] = (0.001, 0.006)


class IspParams(Section):
    white_balance: Annotated[Range, _within(-0.5, 0.5)] = (-0.08, 0.08)
    # Black-level correction in linear light, against the panel's glare (display.black_level).
    black_point: Annotated[Range, _within(0.0, 0.3)] = (0.0, 0.004)
    # Gaussian sigma (camera pixels) of the chroma smoothing phone ISPs apply; 0 = none.
    chroma_denoise: Annotated[Range, _within(0.0, 8.0)] = (0.5, 2.5)
    # Gaussian sigma (output pixels) of the softness added after the shrink: real datasets register
    # and resize their photos onto the truth, and their photos are softer than the digital original.
    output_blur: Annotated[Range, _within(0.0, 5.0)] = (0.2, 1.0)
    gamma: Annotated[Range, _within(1.0, 3.0)] = (2.1, 2.4)  # as the display's: no tone shift on average
    sharpen: Annotated[Range, _within(0.0, 3.0)] = (0.0, 0.8)
    jpeg_quality: Annotated[Range, _within(1.0, 100.0)] = (80.0, 97.0)
    # Demosaics drawn from per pair: bilinear, or gradient (Malvar–He–Cutler: sharper, less colour
    # fringing, nearer what phone ISPs do). null: bilinear for every pair, nothing drawn.
    demosaic: Annotated[list[Literal["bilinear", "gradient"]], Field(min_length=1)] | None = None


class PatternParams(Section):
    """Procedural moiré (pipeline/moire/patterns.py) for a share of the pairs instead of the physics."""

    fraction: float = Field(0.0, ge=0.0, le=1.0)  # share of pairs whose moiré is a drawn band pattern
    period_px: Annotated[Range, _within(2.0, 4096.0)] = (3.0, 200.0)  # log-uniform, output pixels
    amplitude: Annotated[Range, _within(0.001, 1.0)] = (0.02, 0.35)  # log-uniform modulation depth


DASK_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")  # the comms distributed speaks


class SynthesizeParams(Section):
    # Presets fill in every physics key not given explicitly (pipeline/moire/presets.py): a built-in
    # name, or a preset file `demoire calibrate` wrote (a path ending in .yaml).
    preset: str = "default"
    n_pairs: int = Field(480, ge=1, le=10_000_000)
    size: int = Field(128, ge=32, le=4096)
    workers: int = Field(2, ge=1, le=256)
    # Address of a running Dask scheduler (tcp://host:8786) to fan out to instead of local processes.
    dask_address: str | None = None
    sources: SourcesParams = SourcesParams()
    display: DisplayParams = DisplayParams()
    optics: OpticsParams = OpticsParams()
    sensor: SensorParams = SensorParams()
    isp: IspParams = IspParams()
    patterns: PatternParams = PatternParams()
    # How the physics makes the moiré: `render` photographs the content itself through the subpixel
    # grid; `layer` photographs a plain white screen and lays the moiré it shows over the content's
    # light (a screen's moiré is a modulation of its light; no content edge then aliases).
    moire_model: Literal["render", "layer"] = "layer"
    # The clean target's colour: `source` is the source image's; `capture` is the camera's rendering
    # of the screen without moiré, blur, noise or compression, so a model learns to remove those and
    # leaves tone and colour, which differ from one real set to the next, alone.
    target_tone: Literal["source", "capture"] = "capture"
    # The clean target's detail: `source` is as sharp as the screen's pixels; `capture` carries the
    # photo's own blur and sharpening, so a model learns to remove moiré, noise and compression and
    # does not re-sharpen: how sharp a real set's ground truth is, and how well it is aligned, differs
    # from one set to the next.
    target_detail: Literal["source", "capture"] = "source"
    # N: the moiré layers come from a bank of N slots, each rendered once from a geometry drawn from the
    # seed and the slot, and reused by many pairs in one of 8 orientations (pipeline/moire/layer_bank.py):
    # about twice the pairs per second, the layers less varied; each process holds N × 12 × size² bytes
    # (32 at 512²: 100 MB). null: every pair renders its own.
    moire_layer_bank: int | None = Field(None, ge=1, le=1024)
    # Share of pairs photographed without moiré: the same capture (exposure, noise, sharpening, JPEG) with
    # the screen's grid unresolved, so a model sees content it must leave alone. Real moiré comes and goes
    # across a frame, and a model that has only seen moiré everywhere takes real colour texture for it.
    moire_free_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("moire_layer_bank")
    @classmethod
    def _bank_needs_layers(cls, slots: int | None, info: ValidationInfo) -> int | None:
        """A layer bank reuses moiré layers: the `layer` moiré model's, for pairs that are not all drawn patterns."""
        if slots is None or "moire_model" not in info.data:  # a bad moire_model is reported on its own
            return slots
        if info.data["moire_model"] != "layer":
            raise ValueError(f"a layer bank needs moire_model: layer (it reuses moiré layers; moire_model "
                             f"{info.data['moire_model']} renders none); set it to null or moire_model to layer")
        patterns = info.data.get("patterns")
        if patterns is not None and patterns.fraction >= 1.0:
            raise ValueError("a layer bank needs physical moiré: with patterns.fraction 1 every pair's moiré is a "
                             "drawn pattern; set it to null or patterns.fraction below 1")
        return slots

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, raw: Any) -> Any:
        """Merge the preset's values (a built-in one, or a preset file's over its base) under what the user wrote."""
        from pipeline.moire.presets import preset_values

        if not isinstance(raw, dict):
            return raw
        try:
            return deep_merge(preset_values(str(raw.get("preset", "default"))), raw)
        except ValueError:
            return raw  # `_known_preset` reports it under the `preset` key

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        """A built-in preset name or a readable preset file."""
        from pipeline.moire.presets import preset_values

        preset_values(preset)
        return preset

    @field_validator("dask_address")
    @classmethod
    def _dask_scheme(cls, address: str | None) -> str | None:
        """A scheduler address Dask can connect to: host:port, or with one of its schemes."""
        if address is not None and "://" in address and address.split("://")[0] not in DASK_SCHEMES:
            raise ValueError(f"not a Dask scheduler address: use tcp://host:8786 (schemes: {', '.join(DASK_SCHEMES)})")
        return address


def deep_merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, merging nested mappings key by key."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = deep_merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _not_empty_path(value: Any) -> Any:
    """An empty path would read the project folder itself (Path('') is '.'): refused."""
    if isinstance(value, str) and not value.strip():
        raise ValueError("an empty path names the project folder itself; write the dataset's folder")
    return value


DatasetPath = Annotated[Path, BeforeValidator(_not_empty_path)]
"""A real dataset's folder: absolute, or relative to the project root (the folder of params.yaml)."""


# Folder layouts of real paired datasets (pipeline.sources.paired_datasets; a test keeps them equal).
DatasetLayoutName = Literal["auto", "uhdm", "fhdmi", "tip2018", "generic"]
SplitName = Literal["train", "val", "test"]


class ImportedDataset(Section):
    """A real paired dataset whose pairs join the pairs index beside the synthetic ones."""

    path: DatasetPath
    layout: DatasetLayoutName = "auto"
    dataset_split: SplitName | None = None  # the dataset's own split folder to read; None reads all
    split: SplitName  # our split its pairs go to
    limit: int | None = Field(None, ge=1)  # the first `limit` pairs by name; None keeps all


MAX_HELD_OUT = 0.8  # of the source images, for val and test together: at least a fifth is left to train on


class PreprocessParams(Section):
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    datasets: list[ImportedDataset] = []
    # False: index only the imported datasets (real pairs instead of synthetic ones).
    synthetic: bool = True

    @model_validator(mode="after")
    def _every_split_has_pairs(self) -> "PreprocessParams":
        """Val and test leave sources to train on; without synthetic pairs, the datasets fill every split."""
        if self.val_fraction + self.test_fraction > MAX_HELD_OUT:
            raise ValueError(f"val_fraction {self.val_fraction:g} + test_fraction {self.test_fraction:g} hold out more "
                             f"than {MAX_HELD_OUT:g} of the source images, leaving too few to train on")
        if not self.synthetic:
            missing = sorted({"train", "val", "test"} - {d.split for d in self.datasets})
            if missing:
                raise ValueError(f"without synthetic pairs, preprocess.datasets must fill every split; "
                                 f"none goes to {', '.join(missing)}")
        return self


class TrainParams(Section):
    model: Literal["simple", "unet", "mscale"] = "unet"
    # null: the architecture's own default (pipeline/models: ARCHITECTURE_DEFAULTS).
    channels: int | None = Field(None, ge=4, le=512)
    depth: int | None = Field(None, ge=1, le=64)
    # What the network may change: `full` its whole correction; `chroma` only the correction's colour
    # (its luma removed: pipeline/models/correction.py), so each photo's tone and detail stay its own.
    correction: Literal["full", "chroma"] = "full"
    # σ in pixels: the part of the correction wider than a Gaussian of σ is removed and its mean over the image
    # kept (pipeline/models/correction.py): the network removes moiré narrower than that and shifts the colour
    # of the image as a whole, not its wider structure, which its patches never showed it whole. 0: off.
    correction_width: float = Field(0.0, ge=0.0, le=1024.0)
    epochs: int = Field(30, ge=1, le=100_000)
    batch_size: int = Field(16, ge=1, le=4096)
    patch_size: int = Field(64, ge=16, le=2048)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    # A loss name, or {name: weight, ...} summed (e.g. {charbonnier: 1.0, fft: 0.05}).
    loss: dict[LossName, Annotated[float, Field(ge=0.0, le=1000.0)]] = {"mse": 1.0}
    # Weight of the coarser outputs' losses for models with several output scales (mscale).
    multiscale_weight: float = Field(0.5, ge=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    warmup_epochs: float = Field(1.0, ge=0.0, le=1000.0)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)  # 0 = off; e.g. 0.999 keeps an average of the weights
    early_stop_patience: int = Field(0, ge=0, le=100_000)  # epochs without a better val PSNR; 0 = off
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA, full precision on CPU
    compile: bool = False  # torch.compile the model (CUDA; first epoch pays the compile time)
    num_workers: int = Field(0, ge=0, le=64)
    # 0: train on the stored train split. N > 0: on N pairs per epoch rendered on the fly on the
    # training device, from the synthesize section's physics at patch_size (fresh every epoch), in whole
    # steps of batch_size × processes pairs (N rounded down to them).
    synthetic_pairs_per_epoch: int = Field(0, ge=0, le=100_000_000)
    # Data-parallel processes (torch DDP via torchrun): one per GPU; on CPU they share the cores (gloo).
    processes: int = Field(1, ge=1, le=1024)
    resume: bool = True  # continue from data/train/checkpoint.pt when it matches these params and data
    # Live MLflow telemetry: the running train loss every this many steps (0: per-epoch metrics only).
    log_every_steps: int = Field(50, ge=0, le=1_000_000)

    @field_validator("amp", mode="before")
    @classmethod
    def _off_as_written(cls, value: Any) -> Any:
        """`amp: off` unquoted (as `dvc exp run -S train.amp=off` writes it) is YAML 1.1's false."""
        return "off" if value is False else value

    @model_validator(mode="after")
    def _a_step_of_synthetic_pairs(self) -> "TrainParams":
        """On-the-fly pairs come a step at a time (batch_size per process): fewer than one step is not a run."""
        step = self.batch_size * self.processes
        if 0 < self.synthetic_pairs_per_epoch < step:
            raise ValueError(f"synthetic_pairs_per_epoch {self.synthetic_pairs_per_epoch} is less than one step "
                             f"of batch_size × processes = {step} pairs; allowed: 0 (the stored pairs) or at least "
                             f"{step}")
        return self

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_name_alone(cls, value: Any) -> Any:
        """`loss: mse` means {mse: 1.0}."""
        return {value: 1.0} if isinstance(value, str) else value

    @field_validator("loss")
    @classmethod
    def _some_weight(cls, value: dict[str, float]) -> dict[str, float]:
        """At least one loss must count."""
        if not any(weight > 0 for weight in value.values()):
            raise ValueError("at least one loss needs a weight above 0")
        return value


def check_name_glob(pattern: str) -> str:
    """Reject globs fnmatch would silently read as literal text (ValueError): an unclosed `[` is a typo, not a name."""
    start = 0
    while (start := pattern.find("[", start)) != -1:
        end = start + 1 + pattern.startswith("!", start + 1)  # fnmatch: `[!…]` negates a set...
        end += pattern.startswith("]", end)  # ...and a `]` first in the set is a member, not its end
        start = pattern.find("]", end)
        if start == -1:
            raise ValueError("unclosed [ in the glob; allowed: a glob on pair names such as fhdmi_* or test/*")
    return pattern


# Set names become MLflow keys `real_<name>_<metric>` beside the means over sets `real_<metric>` (the model's and the
# input's, `real_identity_<metric>`): a set named `tone` would give its own PSNR the key of the mean tone-aligned
# PSNR, `real_tone_psnr`; `identity` and `identity_tone` those of the input's means.
RESERVED_SET_NAMES = ("tone", "identity", "identity_tone")
# The metrics each set has (pipeline.evaluation.real_sets; a test keeps them equal): two sets' keys would collide
# where one set's name is the other's followed by `_` and the start of a metric's name (`x` and `x_tone`).
REAL_SET_METRICS = ("count", "skipped", "hash", "psnr", "identity_psnr", "psnr_gain_over_identity", "tone_psnr",
                    "identity_tone_psnr", "tone_psnr_gain_over_identity", "ssim", "identity_ssim", "tone_ssim",
                    "identity_tone_ssim", "mse", "identity_mse", "moire_removed_low", "moire_removed_mid",
                    "moire_removed_high")


class RealSet(Section):
    """A real paired set the evaluate stage scores, and the promotion gate decides on."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    path: DatasetPath
    layout: DatasetLayoutName = "auto"
    split: SplitName | None = None  # the dataset's own split folder to read; None reads all
    include: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_name_glob)] = "*"
    limit: int | None = Field(None, ge=1)  # the first `limit` pairs by name (after `include`); None keeps all

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        """Keep set names from colliding with the keys of the means over sets."""
        if name in RESERVED_SET_NAMES:
            raise ValueError(f"{name!r} is reserved (real_{name}_psnr would be the key of a mean over sets); "
                             "choose another name")
        return name


class EvaluateParams(Section):
    grid_count: int = Field(4, ge=1, le=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Real paired sets scored beside the synthetic test split; when any is given, the gate decides on them.
    real_sets: list[RealSet] = []

    @field_validator("real_sets")
    @classmethod
    def _unique_names(cls, sets: list[RealSet]) -> list[RealSet]:
        """Each set's metrics are keyed by its name, so two sets cannot share one, nor MLflow keys."""
        seen: set[str] = set()
        for index, real_set in enumerate(sets):
            if real_set.name in seen:
                raise PydanticCustomError("duplicate_name", "duplicate name; every real set needs its own",
                                          {"at": [index, "name"], "value": real_set.name})
            for other in seen:
                shorter, longer = sorted((other, real_set.name), key=len)
                rest = longer.removeprefix(f"{shorter}_") if longer.startswith(f"{shorter}_") else None
                clash = next((m for m in REAL_SET_METRICS if rest is not None and m.startswith(f"{rest}_")
                              and m.removeprefix(f"{rest}_") in REAL_SET_METRICS), None)
                if clash is not None:
                    raise PydanticCustomError(
                        "metric_clash", "set {other} would write the same MLflow key, real_{key}; choose another name",
                        {"at": [index, "name"], "value": real_set.name, "key": f"{longer}_{clash[len(rest) + 1:]}",
                         "other": repr(shorter if longer == real_set.name else longer)})
            seen.add(real_set.name)
        return sets


class RegisterParams(Section):
    model_name: str = Field("demoire", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    experiment: str = Field("demoire", min_length=1, max_length=200)
    # Champion gate on the test split: the challenger's PSNR must beat the champion's by at least
    # this many dB, and its SSIM may fall below the champion's by at most ssim_tolerance.
    promotion_margin_db: float = Field(0.05, ge=0.0, le=10.0)
    ssim_tolerance: float = Field(0.005, ge=0.0, le=1.0)
    # and beat the untouched input on the same PSNRs, the first version too: a model that makes photos worse
    # is never champion (false: only the champion is compared with, as for a quick smoke test of the stages)
    require_gain_over_input: bool = True


MAX_SIDE_RANGE = (64, 65_536)  # infer.max_side: a smaller side leaves too little of a photo to restore


class InferParams(Section):
    """Tiled inference (`demoire predict`, the logged pyfunc model, `demoire bench infer`)."""

    tile_size: int = Field(512, ge=32, le=8192)
    tile_overlap: int = Field(32, ge=0, le=4096)
    tile_batch: int = Field(1, ge=1, le=256)
    # Up to PIL's decompression-bomb limit (pipeline/io.py), above which it refuses to decode anyway.
    max_pixels: int = Field(100_000_000, ge=1, le=200_000_000)
    # Larger photos are restored at the size whose longer side is this, their correction enlarged back
    # (pipeline.inference.restore_shrunk): a 4K photo's moiré where a 1080p photo's lies; None: at full size.
    max_side: int | None = 2048  # MAX_SIDE_RANGE (_max_side_or_full_size)
    # Share of the screen falloff (light lost towards the photo's edges) estimated on each whole photo and undone
    # (pipeline.falloff); 0: none. A half: what content without falloff can afford (docs/benchmarks.md).
    falloff: float = Field(0.5, ge=0.0, le=1.0)

    @field_validator("max_side")
    @classmethod
    def _max_side_or_full_size(cls, side: int | None) -> int | None:
        """A side to restore at, or None for full size, which the command line writes as 0."""
        low, high = MAX_SIDE_RANGE
        if side is not None and not low <= side <= high:
            raise ValueError(f"allowed: {low} to {high}, or null for full size")
        return side

    @model_validator(mode="after")
    def _overlap_below_half_a_tile(self) -> "InferParams":
        """Blending assumes a pixel lies in at most two tiles per axis."""
        if not self.tile_overlap < self.tile_size / 2:
            raise ValueError(f"tile_overlap {self.tile_overlap} must be less than half of tile_size {self.tile_size}")
        return self


ProfileName = Literal["quick", "cpu-long", "gpu"]  # pipeline.profiles.PROFILES; a test keeps them equal


class Params(Section):
    seed: int = Field(2024, ge=0, le=2**32 - 1)
    # Data size and training recipe (pipeline/profiles.py); keys written below override it.
    profile: ProfileName = "quick"
    synthesize: SynthesizeParams = SynthesizeParams()
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    infer: InferParams = InferParams()
    # `register` would shadow ABCMeta.register on the model class, so the attribute has another name.
    registration: RegisterParams = Field(RegisterParams(), alias="register")

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, raw: Any) -> Any:
        """Merge the profile's synthesize and train values under what the user wrote.

        A key some profile sets, written as null (as params.yaml writes them, so `dvc exp run -S
        train.lr=…` finds the key), means "the profile's value" (the built-in default where the
        selected profile leaves it).
        """
        from pipeline.profiles import PROFILES, profile_keys

        if not isinstance(raw, dict) or raw.get("profile", "quick") not in PROFILES:
            return raw  # the Literal check reports an unknown profile
        profile = PROFILES[raw.get("profile", "quick")]
        merged = dict(raw)
        for section, keys in profile_keys().items():
            written = raw.get(section, {})
            if isinstance(written, dict):
                written = {k: v for k, v in written.items() if not (k in keys and v is None)}
                # key by key, not deeper: a written value replaces the profile's whole (a written
                # `loss: {mse: 1.0}` is that loss alone, not added to the profile's)
                merged[section] = {**profile.get(section, {}), **written}
        return merged


# A params file holds hundreds of values: a document whose aliases (*name) expand it past this many is an alias
# bomb (400 bytes can stand for millions), refused before it is built, validated or shown in an error.
MAX_PARAMS_NODES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes `node` stands for with every alias expanded, a node shared by aliases counted at each use;
    ParamsError for a node that holds itself (`&a [*a]`), an endless value (validating it overflowed the stack)."""
    if sizes.get(id(node)) == 0:
        raise ParamsError(f"line {node.start_mark.line + 1}: an alias inside its own anchor makes an endless value; "
                          "write the value out")
    if id(node) not in sizes:
        sizes[id(node)] = 0  # being counted: met again below it, it holds itself
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (DVC refuses such a
    file too, while PyYAML would silently keep the last value). Merge keys (`<<: *anchor`) work as in
    yaml.safe_load: a key written beside a merged one overrides it, as YAML specifies, and is no duplicate."""

    _MERGE_TAG = "tag:yaml.org,2002:merge"

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._keys_checked: set[int] = set()  # ids of the mapping nodes whose own keys were checked

    def construct_document(self, node: yaml.Node) -> Any:
        """The document's data, unless its aliases expand it past MAX_PARAMS_NODES values."""
        if _expanded_size(node, {}) > MAX_PARAMS_NODES:
            raise ParamsError(f"its aliases (*name) expand it to over {MAX_PARAMS_NODES:,} values, no params file's "
                              "size; write the values out, or repeat fewer")
        return super().construct_document(node)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Check a mapping's own keys, then let PyYAML move its merged keys in beside them."""
        # flattening deletes the `<<` pairs and puts the merged ones before the rest: check before, once per
        # node, as a merged node is flattened again by each mapping that merges it
        if id(node) not in self._keys_checked:
            self._keys_checked.add(id(node))
            self._check_keys(node)
        super().flatten_mapping(node)

    def _check_keys(self, node: yaml.MappingNode) -> None:
        """ParamsError for a key that is not a name or that the mapping gives twice (merge keys aside)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == self._MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if isinstance(key, (list, dict)):  # `[1]: 2`: YAML allows it, no section has such a key
                raise ParamsError(f"line {key_node.start_mark.line + 1}: a key must be a name, "
                                  f"not a {type(key).__name__}")
            if key in seen:
                raise ParamsError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice in one section "
                                  f"(first on line {seen[key] + 1}); keep one")
            seen[key] = key_node.start_mark.line


def read_params_file(path: Path | str) -> dict:
    """The raw mapping of a params file: ParamsError for a missing, unreadable, empty or non-mapping file and
    for a key given twice."""
    path = Path(path)
    try:
        text = path.read_text()
        raw = yaml.load(text, Loader=_ParamsLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ParamsError(f"{path}: is a folder, not a params file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read ({exc})") from None
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    if raw is None:
        raise ParamsError(f"{path}: empty; it needs the sections the stages read ({', '.join(_top_level_keys())}); "
                          "`demoire check-params --show` prints every default")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's problem with the line and column where it found it, as DVC reports them."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or first_line(str(exc))
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _top_level_keys() -> list[str]:
    return [field.alias or name for name, field in Params.model_fields.items()]


def largest_allowed(section: type[BaseModel], field: str) -> int:
    """The most a params field allows (its `le`), so a bound elsewhere follows the schema's."""
    return next(rule.le for rule in section.model_fields[field].metadata if getattr(rule, "le", None) is not None)


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError with one line on the first problem.

    The one validator: `demoire check-params`, every stage and every command reading params call it.
    """
    path = Path(path)
    params = parse_params(read_params_file(path), source=str(path))
    check_patches_fit_the_pairs(params, str(path))
    return params


def check_patches_fit_the_pairs(params: Params, source: str) -> None:
    """A pipeline's training cuts its patches from the synthetic pairs (unless it renders its own on the fly):
    a patch larger than them would stop training at its first step. (Ad-hoc settings, a synthesis alone or a
    benchmark, are not a pipeline: parse_params leaves them be.)"""
    patch, size = params.train.patch_size, params.synthesize.size
    if params.preprocess.synthetic and not params.train.synthetic_pairs_per_epoch and patch > size:
        raise ParamsError(f"{source}: train.patch_size = {patch}: larger than synthesize.size {size}, the pairs' side "
                          f"it is cut from; choose at most {size} or raise synthesize.size")


def check_folders(resolved: Params, source: str, inputs_dir: Path, real_sets_dir: Path | None = None) -> None:
    """The folders params name exist: source folders and imported datasets relative to `inputs_dir`, real sets to
    `real_sets_dir` (default: the same). Said in one line by `demoire check-params` and by each stage before its
    Prefect server starts, not by a stage DVC has already cleared the outputs of. Their contents are the stages'
    to check."""
    real_sets_dir = inputs_dir if real_sets_dir is None else real_sets_dir
    named = [(f"synthesize.sources.folders[{i}]", inputs_dir, folder)
             for i, folder in enumerate(resolved.synthesize.sources.folders)]
    named += [(f"preprocess.datasets[{i}].path", inputs_dir, entry.path)
              for i, entry in enumerate(resolved.preprocess.datasets)]
    named += [(f"evaluate.real_sets[{i}].path", real_sets_dir, real.path)
              for i, real in enumerate(resolved.evaluate.real_sets)]
    for key, base, folder in named:
        if not (base / folder).is_dir():  # an absolute path stays as it is
            raise ParamsError(f"{source}: {key} = {str(folder)!r}: no such folder ({base / folder})")


def parse_params(raw: Any, source: str = "params", options: Mapping[str, str] | None = None) -> Params:
    """Validate a params mapping; raise ParamsError naming key, value and what is allowed.

    `options` maps dotted keys to the command-line options that set them (`infer.tile_size` → `--tile`):
    an error in one of those names the option, as the user wrote it.
    """
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(describe_error(exc, source, raw, options or {})) from None


def describe_error(exc: ValidationError, source: str, raw: dict | None = None,
                   options: Mapping[str, str] | None = None) -> str:
    """Turn the first pydantic error into 'source: key = value: what is allowed'.

    With the mapping that was validated (`raw`), a value that came from a preset file and not from it is
    reported as that file's key, so the user is sent to the file that holds it; a key an option set
    (`options`, as in parse_params) is reported as that option.
    """
    options = options or {}
    err = exc.errors()[0]
    loc = [part for part in err["loc"] if isinstance(part, str)]
    parts = list(err["loc"])
    if parts[-1:] == ["[key]"]:  # a bad mapping key (e.g. a loss name): report the mapping's key path
        parts = parts[:-2]
    value = err.get("input")
    context = err.get("ctx") or {}
    if "at" in context:  # a check of a whole list that points at the item at fault
        parts, value = parts + list(context["at"]), context["value"]
    preset_file = _preset_file_holding(raw, parts)
    if preset_file is not None:
        named_by = options.get("synthesize.preset", source)  # --preset, where a command's option named the file
        source, parts = f"{preset_file} (the preset file {named_by} names)", parts[1:]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_fields_at(loc[:-1])))
        return f"{source}: {key} = {shown_value(repr(value))}: unknown key; allowed keys here: {allowed}"
    message = err["msg"].removeprefix("Value error, ")
    if key in options:
        return f"{options[key]} {shown_value(repr(value))}: {message}"
    if isinstance(value, dict):  # a check of a whole section names its keys in its message: not the section's dump
        section_options = {k.removeprefix(f"{key}."): o for k, o in options.items() if k.startswith(f"{key}.")}
        return _section_error(source, key, loc, message, section_options)
    return f"{source}: {key} = {shown_value(repr(value))}: {message}"


def _section_error(source: str, key: str, loc: list[str], message: str, options: Mapping[str, str]) -> str:
    """A whole section's error, its keys that options set named as those options; `source` kept for the rest."""
    if not options:
        return f"{source}: {key}: {message}"
    for field, option in options.items():
        message = re.sub(rf"\b{re.escape(field)}\b", option, message)
    if not any(re.search(rf"\b{re.escape(field)}\b", message) for field in _fields_at(loc)):
        return message  # only options named: the user wrote all of it on the command line
    return f"{source}: {key}: {message}"


def _preset_file_holding(raw: dict | None, parts: list) -> str | None:
    """The preset file a bad `synthesize` value came from, when the validated mapping does not hold it."""
    from pipeline.moire.presets import PRESET_FILE_SUFFIXES

    section = raw.get("synthesize") if isinstance(raw, dict) else None
    preset = section.get("preset") if isinstance(section, dict) else None
    if parts[:1] != ["synthesize"] or not isinstance(preset, str) or not preset.endswith(PRESET_FILE_SUFFIXES):
        return None
    node: Any = raw
    for part in parts:  # the user's own mapping down to the key: present means they wrote it
        if isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
        else:
            return preset
    return None


def _fields_at(loc: list[str]) -> list[str]:
    """Field names of the params section found by walking `loc` from the root model."""
    model: type[BaseModel] = Params
    for name in loc:
        field = next(f for n, f in model.model_fields.items() if name in (n, f.alias))
        annotation = field.annotation
        if get_origin(annotation) is list:  # list items: `loc` has dropped their index
            annotation = get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return [field.alias or name for name, field in model.model_fields.items()]


def flatten(params: BaseModel) -> dict[str, str]:
    """Flatten params into dotted keys for MLflow (`synthesize.optics.tilt` → '(0.0, 0.12)')."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            flat[prefix] = str(value)

    walk("", params.model_dump(mode="json", by_alias=True))
    return flat

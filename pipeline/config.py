"""params.yaml as pydantic models, validated once at the edge; errors become one readable line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ParamsError


def _ordered(bounds: tuple[float, float]) -> tuple[float, float]:
    """Reject ranges whose minimum exceeds their maximum."""
    low, high = bounds
    if low > high:
        raise ValueError(f"range minimum {low} is greater than its maximum {high}")
    return bounds


def _fraction(bounds: tuple[float, float]) -> tuple[float, float]:
    """Reject ranges outside (0, 1]."""
    if bounds[0] <= 0 or bounds[1] > 1:
        raise ValueError(f"range must lie within (0, 1], got {list(bounds)}")
    return bounds


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
"""A [min, max] pair sampled uniformly per pair."""


class Section(BaseModel):
    """Base for every params section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SourcesParams(Section):
    bundled: bool = True
    procedural: int = Field(64, ge=0, le=100_000)
    folders: list[Path] = []


class DisplayParams(Section):
    subpixel_layout: Literal["rgb_stripe", "bgr_stripe"] = "rgb_stripe"
    fill_factor: Annotated[Range, AfterValidator(_fraction)] = (0.55, 0.9)
    gamma: float = Field(2.2, gt=0.5, le=4.0)


class OpticsParams(Section):
    pitch_ratio: Range = (0.8, 1.3)
    rotation_deg: Range = (-6.0, 6.0)
    tilt: Range = (0.0, 0.12)
    blur_sigma: Range = (0.0, 0.4)
    supersample: int = Field(4, ge=1, le=8)


class SensorParams(Section):
    # Light-sensitive fraction of the pixel pitch: below 1 the pixel integrates a narrower area,
    # which lets more of the display's subpixel frequency alias into moiré.
    aperture: Annotated[Range, AfterValidator(_fraction)] = (0.45, 0.8)
    shot_noise: Range = (0.0005, 0.004)
    read_noise: Range = (0.001, 0.006)


class IspParams(Section):
    jpeg_quality: Range = (75.0, 95.0)


class SynthesizeParams(Section):
    n_pairs: int = Field(480, ge=1, le=10_000_000)
    size: int = Field(128, ge=32, le=4096)
    workers: int = Field(2, ge=1, le=256)
    sources: SourcesParams = SourcesParams()
    display: DisplayParams = DisplayParams()
    optics: OpticsParams = OpticsParams()
    sensor: SensorParams = SensorParams()
    isp: IspParams = IspParams()


class PreprocessParams(Section):
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5)


class TrainParams(Section):
    model: Literal["simple", "unet"] = "unet"
    channels: int = Field(48, ge=4, le=512)
    depth: int = Field(3, ge=2, le=64)
    epochs: int = Field(30, ge=1, le=100_000)
    batch_size: int = Field(16, ge=1, le=4096)
    patch_size: int = Field(64, ge=16, le=2048)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    loss: Literal["mse", "l1"] = "mse"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int = Field(0, ge=0, le=64)


class EvaluateParams(Section):
    grid_count: int = Field(4, ge=1, le=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class RegisterParams(Section):
    model_name: str = Field("demoire", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    experiment: str = Field("demoire", min_length=1, max_length=200)


class Params(Section):
    seed: int = Field(2024, ge=0, le=2**32 - 1)
    synthesize: SynthesizeParams = SynthesizeParams()
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    # `register` would shadow ABCMeta.register on the model class, so the attribute has another name.
    registration: RegisterParams = Field(RegisterParams(), alias="register")


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate params.yaml; raise ParamsError with one line on the first problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({_first_line(str(exc))})") from exc
    return parse_params(raw, source=str(path))


def parse_params(raw: Any, source: str = "params") -> Params:
    """Validate a params mapping; raise ParamsError naming key, value and what is allowed."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(describe_error(exc, source)) from None


def describe_error(exc: ValidationError, source: str) -> str:
    """Turn the first pydantic error into 'source: key = value: what is allowed'."""
    err = exc.errors()[0]
    loc = [part for part in err["loc"] if isinstance(part, str)]
    key = ".".join(str(part) for part in err["loc"])
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_fields_at(loc[:-1])))
        return f"{source}: {key} = {value!r}: unknown key; allowed keys here: {allowed}"
    message = err["msg"].removeprefix("Value error, ")
    return f"{source}: {key} = {value!r}: {message}"


def _fields_at(loc: list[str]) -> list[str]:
    """Field names of the params section found by walking `loc` from the root model."""
    model: type[BaseModel] = Params
    for name in loc:
        field = next(f for n, f in model.model_fields.items() if name in (n, f.alias))
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return [field.alias or name for name, field in model.model_fields.items()]


def _first_line(text: str) -> str:
    """First non-empty line of a message."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


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

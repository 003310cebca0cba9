"""Demoiré architectures by name; each maps an RGB batch in [0, 1] to a restored batch, any size."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline.config import TrainParams, largest_allowed
from pipeline.errors import InputDataError, ModelNotFoundError, ParamsError, first_line
from pipeline.io import atomic_path, write_torch
from pipeline.models.correction import CASTS, CORRECTIONS, with_correction
from pipeline.models.mscale import MultiScaleDemoireNet
from pipeline.models.simple import SimpleCNN
from pipeline.models.unet import SmallUNet

MODEL_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "simple": lambda channels, depth: SimpleCNN(channels=channels, layers=depth),
    "unet": lambda channels, depth: SmallUNet(channels=channels, levels=depth),
    "mscale": lambda channels, depth: MultiScaleDemoireNet(channels=channels, depth=depth),
}
# (channels, depth) when params leave them null: mscale at 32/2 is about half of ESDNet's MACs.
ARCHITECTURE_DEFAULTS: dict[str, tuple[int, int]] = {"simple": (48, 6), "unet": (48, 3), "mscale": (32, 2)}
WEIGHTS_FILE, SPEC_FILE = "model.pt", "model.json"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an architecture before loading its state dict."""

    name: str
    channels: int
    depth: int
    correction: str = "full"  # pipeline.models.correction: a spec written before it existed is `full`
    correction_width: float = 0.0  # σ in pixels (pipeline.models.correction); 0: off, as in specs written before it
    # how that correction's mean over the image is applied: `gain` for models trained since it existed, `offset` before
    correction_cast: str = "offset"


def model_spec(name: str, channels: int | None = None, depth: int | None = None, correction: str = "full",
               correction_width: float = 0.0, correction_cast: str = "gain") -> ModelSpec:
    """The spec of architecture `name`, its own defaults filling a channels or depth left as None."""
    if name not in MODEL_BUILDERS:
        raise ParamsError(f"train.model = {name!r}: unknown model; choose one of {', '.join(MODEL_BUILDERS)}")
    if correction not in CORRECTIONS:
        raise ParamsError(f"train.correction = {correction!r}: choose one of {', '.join(CORRECTIONS)}")
    if not correction_width >= 0:
        raise ParamsError(f"train.correction_width = {correction_width!r}: must be ≥ 0 (pixels; 0: off)")
    if correction_cast not in CASTS:
        raise ParamsError(f"correction_cast = {correction_cast!r}: choose one of {', '.join(CASTS)}")
    default_channels, default_depth = ARCHITECTURE_DEFAULTS[name]
    return ModelSpec(name, channels or default_channels, depth or default_depth, correction, float(correction_width),
                     correction_cast)


def build_model(spec: ModelSpec, seed: int | None = None) -> nn.Module:
    """Instantiate the architecture `spec` names; with `seed`, its initial weights depend on it alone."""
    if spec.name not in MODEL_BUILDERS:
        raise ParamsError(f"train.model = {spec.name!r}: unknown model; choose one of {', '.join(MODEL_BUILDERS)}")
    if seed is None:
        return with_correction(MODEL_BUILDERS[spec.name](spec.channels, spec.depth), spec.correction,
                               spec.correction_width, spec.correction_cast)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return with_correction(MODEL_BUILDERS[spec.name](spec.channels, spec.depth), spec.correction,
                               spec.correction_width, spec.correction_cast)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_model(model: nn.Module, spec: ModelSpec, directory: Path) -> None:
    """Write the state dict (loadable with weights_only=True) and the spec, atomically."""
    directory = Path(directory)
    write_torch(directory / WEIGHTS_FILE, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    with atomic_path(directory / SPEC_FILE) as tmp:
        tmp.write_text(json.dumps(asdict(spec), indent=2) + "\n")


# What a spec file may hold: what train.channels and train.depth allow, so every model trained here loads again; a
# model far wider or deeper would only exhaust memory when built.
MAX_CHANNELS, MAX_DEPTH = largest_allowed(TrainParams, "channels"), largest_allowed(TrainParams, "depth")


def read_spec(path: Path) -> ModelSpec:
    """The ModelSpec a model.json holds, each value checked (InputDataError naming the key and the value)."""
    def bad(detail: str) -> InputDataError:
        return InputDataError(f"{path} is not a model spec ({detail}); re-export or re-train the model")

    try:
        spec = ModelSpec(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # not JSON, not an object, or other keys than a spec's
        raise bad(first_line(str(exc))) from None
    for key, top in (("channels", MAX_CHANNELS), ("depth", MAX_DEPTH)):
        value = getattr(spec, key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise bad(f"{key} = {value!r}: a whole number from 1 to {top}")
    width = spec.correction_width
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 <= width < float("inf"):
        raise bad(f"correction_width = {width!r}: a number of pixels ≥ 0")
    for key, allowed in (("name", MODEL_BUILDERS), ("correction", CORRECTIONS), ("correction_cast", CASTS)):
        value = getattr(spec, key)
        if not isinstance(value, str) or value not in allowed:
            raise bad(f"{key} = {value!r}: one of {', '.join(allowed)}")
    return spec


def load_model(directory: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Rebuild the architecture from its spec and load weights without unpickling code."""
    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file() or not (directory / SPEC_FILE).is_file():
        raise ModelNotFoundError(f"no model in {directory} (expected {WEIGHTS_FILE} and {SPEC_FILE})")
    spec = read_spec(directory / SPEC_FILE)
    model = build_model(spec)
    try:
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # torch raises many kinds for a damaged file (KeyError, RuntimeError, UnpicklingError)
        # torch's UnpicklingError advises loading with weights_only=False, which runs whatever the file holds
        detail = "not a file of weights alone" if isinstance(exc, pickle.UnpicklingError) else first_line(str(exc))
        raise InputDataError(f"{directory / WEIGHTS_FILE} holds no weights of the {spec.name} model its "
                             f"{SPEC_FILE} describes ({type(exc).__name__}: {detail})") from None
    return model.to(device).eval(), spec


"""Load a model from wherever a user points: a model folder, a `models:/` URI, or an exported file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.models import ModelSpec


def load_any_model(model: str, device: str) -> tuple[nn.Module, torch.device]:
    """The model and the device it runs on, from a folder (model.pt + model.json), an MLflow `models:/` URI,
    or a file written by `demoire export` (.onnx under onnxruntime on the CPU, TorchScript .pt/.ts on `device`)."""
    net, torch_device, _ = load_model_and_spec(model, device)
    return net, torch_device


def load_model_and_spec(model: str, device: str) -> tuple[nn.Module, torch.device, ModelSpec]:
    """`load_any_model` and the architecture spec (name, channels, depth) of what it loaded."""
    from pipeline.export import ExportedModel, exported_format
    from pipeline.training.device import resolve_device

    torch_device = resolve_device(device)
    if exported_format(Path(model)) is not None:
        exported = ExportedModel(Path(model), torch_device)
        return exported, exported.device, exported.spec
    if model.startswith("models:/"):
        from pipeline.registry import load_registered_model_and_spec

        net, spec = load_registered_model_and_spec(model, torch_device)
        return net, torch_device, spec
    from pipeline.models import load_model

    net, spec = load_model(Path(model), torch_device)
    return net, torch_device, spec


def pin_model(model: str) -> tuple[str, dict]:
    """The model to load, with a registry alias resolved to its version once, and what the registry says of that
    version ({} for a folder or file): a promotion between loading and describing would name another version."""
    if not model.startswith("models:/"):
        return model, {}
    from pipeline.registry import model_version_info

    registered = model_version_info(model)
    return f"models:/{registered['name']}/{registered['version']}", registered


def describe_model(model: str, net: nn.Module, spec: ModelSpec, registered: dict | None = None) -> dict:
    """What a user sees of a loaded model: source, name, and for a registry version (`pin_model`'s) its version,
    alias, run and tagged metrics; then the architecture."""
    from pipeline.export import ExportedModel

    # every key GET /model documents, null where a folder or exported file has none (a registry version has them)
    info = {"source": model, "name": Path(model).name or model, "version": None, "alias": None, "run_id": None,
            "promotion": None, "last_promote": None, "metrics": {}} | (registered or {})
    exported = isinstance(net, ExportedModel)
    return info | {"architecture": spec.name, "channels": spec.channels, "depth": spec.depth,
                   "format": net.format if exported else "pytorch",
                   "parameters": None if exported else sum(p.numel() for p in net.parameters())}

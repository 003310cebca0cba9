"""Export a trained model to ONNX or TorchScript, check it against PyTorch, and run an exported file.

The exported graph is the architecture's forward pass on an image whose sides are multiples of the
model's size step (`multiple`); `ExportedModel` reflect-pads any other size to that step and crops
the result, as the architectures do inside, so the same graph serves every height and width and the
tiling of `pipeline.inference` runs on it unchanged. A model with a `correction_width` exports the part a
tile computes alone; the narrowing of its correction over the whole image (pipeline.models.correction)
is a fixed map of the image, not of weights, and `ExportedModel` applies it from the spec in the file's
metadata, as a runtime of one's own would have to. ONNX uses the TorchScript-based exporter
(`dynamo=False`: no onnxscript needed) at opset `ONNX_OPSET`, with dynamic batch, height and width.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import InputDataError, ModelNotFoundError, ParamsError
from pipeline.io import atomic_path
from pipeline.lifetime import import_native
from pipeline.models import ModelSpec
from pipeline.models.correction import Narrowing

ONNX_OPSET = 17
EXPORT_FORMATS = ("onnx", "torchscript")
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}
METADATA_KEY = "demoire"  # ONNX metadata_props key / TorchScript extra file holding the spec and multiple
# Largest |ONNX/TorchScript − PyTorch| allowed on [0, 1] outputs: float32 summation-order noise, far below
# one uint8 level (1/255 ≈ 0.0039).
TOLERANCE = 1e-4
CHECK_SIZES = ((37, 53), (101, 67))  # odd sides, off the models' grids, one taller than wide


FORMAT_NAMES = {"onnx": "an ONNX", "torchscript": "a TorchScript"}


def check_onnx_packages() -> None:
    """ONNX export writes with onnx and checks the file under onnxruntime: both, before any work."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ParamsError(f"ONNX export needs {' and '.join(missing)} (onnx writes the file, onnxruntime checks it): "
                          "pip install 'demoire[export]'")


def exported_format(path: Path) -> str | None:
    """`onnx` or `torchscript` for an exported file's suffix, None for anything else (a model folder)."""
    return SUFFIXES.get(Path(path).suffix.lower())


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom and right to a multiple of `multiple`, as the architectures do."""
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x


def export_model(net: nn.Module, spec: ModelSpec, fmt: str, path: Path, multiple: int,
                 sizes=CHECK_SIZES, tolerance: float = TOLERANCE, source: str | None = None,
                 overwrite: bool = True) -> float:
    """Write `net` as ONNX or TorchScript to `path` with its spec, size step and `source` (the model it came
    from: a folder or a registry version) embedded, check it against PyTorch on `sizes` and return the largest
    difference; the file is renamed into place only if it passes (and, with `overwrite` False, if no file took
    its name meanwhile: OutputExistsError)."""
    if fmt not in EXPORT_FORMATS:
        raise ParamsError(f"format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if exported_format(path) != fmt:
        allowed = ", ".join(s for s, f in SUFFIXES.items() if f == fmt)
        raise ParamsError(f"-o {path}: {FORMAT_NAMES[fmt]} file must end in {allowed}")
    if fmt == "onnx":
        check_onnx_packages()
    net = net.cpu().eval()
    graph = _Pointwise(net) if hasattr(net, "pointwise") else net
    side = max(multiple * 2, 32) // multiple * multiple
    example = torch.rand(1, 3, side, side + multiple, generator=torch.Generator().manual_seed(0))
    metadata = json.dumps({**asdict(spec), "multiple": multiple, "source": source})
    with atomic_path(path, overwrite) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer warns about the padding branch, never taken on the grid
            if fmt == "onnx":
                _export_onnx(graph, example, tmp, metadata)
            else:
                tmp.write_bytes(_torchscript_bytes(torch.jit.trace(graph, example, check_trace=False), metadata))
        return check_export(net, ExportedModel(tmp, fmt=fmt), sizes, tolerance, name=path)


class _Pointwise(nn.Module):
    """What a restricted model's export holds: the part a tile computes alone (pipeline.models.correction)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.pointwise(x)


def _torchscript_bytes(traced: torch.jit.ScriptModule, metadata: str) -> bytes:
    """The TorchScript archive of `traced` with `metadata`, its bytes free of where the code that traced it lives."""
    # Saved into memory, not to the temp path: torch names the archive's folder after the file it writes, which would
    # put the temp name (host, process) into the bytes. The tracer records the Python stack of every op it sees (the
    # checkout's and the venv's absolute paths, the caller's frames and line numbers) as source ranges, saved in the
    # archive's code/*.py.debug_pkl; torch.jit.load does without those members, and a module loaded so has source
    # ranges into the archive's own code/*.py, which is what a second torch.jit.save writes instead. No option of
    # trace, save or load drops the stack. The code, weights and outputs are the same; the example input the trace
    # kept (traced_inputs, which nothing here reads) is not carried over.
    traced_archive = io.BytesIO()
    torch.jit.save(traced, traced_archive)
    reloaded = torch.jit.load(io.BytesIO(_without_debug_info(traced_archive.getvalue())), map_location="cpu")
    archive = io.BytesIO()
    torch.jit.save(reloaded, archive, _extra_files={METADATA_KEY: metadata})
    return archive.getvalue()


def _without_debug_info(archive: bytes) -> bytes:
    """A TorchScript archive less its `*.debug_pkl` members (source ranges, which torch.jit.load does not need)."""
    stripped = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(stripped, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            if not name.endswith(".debug_pkl"):
                target.writestr(name, source.read(name))
    return stripped.getvalue()


def _export_onnx(net: nn.Module, example: torch.Tensor, path: Path, metadata: str) -> None:
    """The ONNX graph with dynamic batch/height/width, and the metadata in its metadata_props."""
    try:
        onnx = import_native("onnx")
    except ImportError as exc:  # installed but broken (a protobuf it cannot use)
        raise ParamsError(f"ONNX export cannot import onnx ({exc}): pip install 'demoire[export]'") from None
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                      input_names=["image"], output_names=["restored"],
                      dynamic_axes={"image": axes, "restored": axes})
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata
    onnx.save(graph, str(path))


class ExportedModel(nn.Module):
    """An exported file as a module: N×3×H×W in [0, 1] of any size in, the restored batch out.

    ONNX runs under onnxruntime on the CPU; TorchScript on the device it is loaded on.
    """

    def __init__(self, path: Path, device: torch.device | str = "cpu", fmt: str | None = None):
        super().__init__()
        self.path, self.format = Path(path), fmt or exported_format(path)
        if self.format is None or not self.path.is_file():
            raise ModelNotFoundError(f"no exported model at {path} (an .onnx file or a TorchScript .pt/.ts file)")
        if self.format == "onnx":
            self._session, metadata = _onnx_session(self.path)
            self.device = torch.device("cpu")
        else:
            extra = {METADATA_KEY: ""}
            try:
                self._module = torch.jit.load(str(self.path), map_location=device, _extra_files=extra)
            except RuntimeError as exc:
                if (self.path.parent / "model.json").is_file():
                    raise ModelNotFoundError(f"{path} holds a model folder's weights, not a TorchScript export: "
                                             f"pass --model {self.path.parent}") from None
                raise InputDataError(f"cannot load TorchScript model {path}: {str(exc).splitlines()[0]}") from None
            self.device, metadata = torch.device(device), extra[METADATA_KEY]
        if not metadata:
            raise InputDataError(f"{path} was not written by demoire export (no {METADATA_KEY!r} metadata)")
        try:
            info = json.loads(metadata)
            self.spec = ModelSpec(info["name"], info["channels"], info["depth"], info.get("correction", "full"),
                                  float(info.get("correction_width", 0.0)), info.get("correction_cast", "offset"))
            self.multiple = int(info["multiple"])
            if self.multiple < 1:
                raise ValueError("multiple below 1")
            spec = self.spec
            self.narrowing = Narrowing(spec.correction_width, spec.correction_cast, spec.correction == "chroma")
        except (TypeError, ValueError, KeyError, ParamsError) as exc:
            detail = str(exc) if isinstance(exc, (ParamsError, ValueError)) else f"{type(exc).__name__} {exc}"
            raise InputDataError(f"{path}: its {METADATA_KEY!r} metadata is not demoire export's ({detail})") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.narrowing(self.pointwise(x), x)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """The exported graph on `x`: the whole restoration, but for the narrowing of a `correction_width`."""
        height, width = x.shape[-2:]
        padded = _pad_to(x, self.multiple)
        if self.format == "onnx":
            array = padded.detach().float().cpu().numpy()
            output = torch.from_numpy(self._session.run(None, {"image": array})[0]).to(x.device)
        else:
            output = self._module(padded.to(self.device)).to(x.device)
        return output[..., :height, :width]


def _onnx_session(path: Path):
    """An onnxruntime CPU session on `path` and its demoire metadata."""
    try:
        onnxruntime = import_native("onnxruntime")
    except ImportError:
        raise ModelNotFoundError(f"running {path} needs onnxruntime: pip install 'demoire[export]'") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        raise InputDataError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from None
    return session, session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)


def check_export(net: nn.Module, exported: ExportedModel, sizes=CHECK_SIZES, tolerance: float = TOLERANCE,
                 name: Path | None = None) -> float:
    """Largest |exported − PyTorch| on random images of `sizes` (H, W), both on the CPU; error above `tolerance`."""
    from pipeline.inference import restore_tensor

    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for height, width in sizes:
        image = torch.rand(3, height, width, generator=generator)
        ours = restore_tensor(exported, image, torch.device("cpu"))
        theirs = restore_tensor(net.cpu(), image, torch.device("cpu"))
        worst = max(worst, float((ours - theirs).abs().max()))
    if not np.isfinite(worst) or worst > tolerance:
        raise InputDataError(f"{name or exported.path} differs from PyTorch by {worst:.2e} (> {tolerance:g}) on "
                             f"{', '.join(f'{h}x{w}' for h, w in sizes)}; it was not kept")
    return worst

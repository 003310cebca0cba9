"""The logged model: a pyfunc that rebuilds the architecture from its spec and loads a plain state dict
(weights_only), so loading needs no pickled torch module; logging it, downloading and loading it back."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, REQUEST_LIMIT_EXCEEDED
from mlflow.types.schema import Schema, TensorSpec

import pipeline
from pipeline.config import InferParams
from pipeline.errors import ModelNotFoundError
from pipeline.models import SPEC_FILE, WEIGHTS_FILE
from pipeline.registry.store import connect, resolve_alias, resolve_version

# No input schema: MLflow would cast a request's numbers to it before the model sees them (0.5 → 0, a
# black image with 200 OK). The model checks its input itself (`checked_image`) and answers 400.
IMAGE_SIGNATURE = ModelSignature(inputs=None, outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]))
SERVE_MAX_PIXELS = 8_388_608  # 4096 x 2048, a 4K UHD frame fits; larger requests are refused (400)


def _refuse(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # HTTP 400 from a scoring server


def encoded_photo(model_input) -> bytes | None:
    """The encoded image file in a request, if it holds one: raw bytes, or base64 text (what JSON can carry,
    e.g. `{"inputs": "<base64 of a JPEG>"}`), alone or as a one-element list or array; else None."""
    import base64
    import binascii

    value = model_input
    if isinstance(value, np.ndarray) and value.dtype.kind in "USO" and value.size == 1:
        value = value.reshape(-1)[0]
    elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, bytes)):
        value = value[0]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=True)
        except (binascii.Error, ValueError):
            raise _refuse("expected base64 of an image file (PNG, JPEG, WebP, ...) or an HxWx3 array") from None
    return None


def decoded_photo(data: bytes, max_pixels: int) -> np.ndarray:
    """An encoded photo as upright sRGB HxWx3 uint8 (pipeline.photos), refusing what is not one with 400."""
    from pipeline.errors import InputDataError
    from pipeline.photos import read_photo

    try:
        return read_photo(data, max_pixels, name="the request", limit_setting="max_pixels in its model_config").rgb
    except InputDataError as exc:
        raise _refuse(str(exc)) from None


def checked_image(model_input, max_pixels: int) -> np.ndarray:
    """The request as an HxWx3 uint8 array, refusing (MlflowException, 400) any other shape, a float, bool or
    out-of-range value, or more than `max_pixels` pixels; never a silent cast. An encoded image file
    (bytes or base64 text) is decoded as `demoire predict` reads photos."""
    encoded = encoded_photo(model_input)
    if encoded is not None:
        return decoded_photo(encoded, max_pixels)
    if not isinstance(model_input, (np.ndarray, list)):
        raise _refuse(f"expected an HxWx3 array of integers 0-255 ({{\"inputs\": [[[r, g, b], ...], ...]}}), "
                      f"got {type(model_input).__name__}")
    try:
        image = np.asarray(model_input)
    except ValueError:
        raise _refuse("expected an HxWx3 array of integers 0-255; rows of different lengths") from None
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise _refuse(f"expected an HxWx3 array of integers 0-255 (RGB), got shape {list(image.shape)}")
    height, width = image.shape[:2]
    if height * width > max_pixels:
        raise _refuse(f"image of {width}x{height} = {height * width:,} pixels is over this model's limit of "
                      f"{max_pixels:,} (max_pixels in its model_config)")
    if image.dtype == np.uint8:  # a read-only array (np.asarray of a PIL image) copied: torch warns on sharing it
        return image if image.flags.writeable else image.copy()
    if image.dtype.kind not in "iu":
        raise _refuse(f"expected integers 0-255, got {image.dtype} values; send 8-bit RGB, not floats or booleans")
    low, high = int(image.min()), int(image.max())
    if low < 0 or high > 255:
        raise _refuse(f"expected integers 0-255, got values in [{low}, {high}]")
    return image.astype(np.uint8)


class DemoirePyfunc(mlflow.pyfunc.PythonModel):
    """Serves a demoiré model: HxWx3 uint8 RGB of any size in, restored HxWx3 uint8 RGB out, tiled inside.

    Tile settings and device come from the logged model's `model_config` (see `serving_config`),
    so a served model tiles without the project's params.yaml.
    """

    def load_context(self, context) -> None:
        from pipeline.inference import check_tiling  # imported here: runs inside the serving process
        from pipeline.models import load_model
        from pipeline.training.device import resolve_device

        config = {**serving_config(InferParams()), **(context.model_config or {})}
        check_tiling(config["tile_size"], config["tile_overlap"], config["tile_batch"])
        self.tiling = {"tile_size": config["tile_size"], "overlap": config["tile_overlap"],
                       "batch_size": config["tile_batch"], "max_side": config["max_side"],
                       "falloff": config["falloff"]}
        self.device = resolve_device(config["device"])
        self.max_pixels = int(config.get("max_pixels", SERVE_MAX_PIXELS))
        self.model, self.spec = load_model(Path(context.artifacts["model_dir"]), self.device)

    # `np.ndarray` is a hint MLflow validates and casts nothing against (it infers no schema from it), so a request
    # reaches `checked_image` as sent: an array, nested lists, bytes or base64 text. Without a hint MLflow warns on
    # every load of the model, in every command and in the scoring server.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        """Restore one image; stops between tiles once the request's time is up or its client is gone."""
        from pipeline.inference import RestoreStopped, restore_image
        from pipeline.serving.bounded import request_stop

        stop = request_stop()
        stop.started.set()
        try:
            image = checked_image(model_input, self.max_pixels)
            return restore_image(self.model, image, self.device, **self.tiling, should_stop=stop.is_set)
        except RestoreStopped:
            raise MlflowException(f"stopped: {stop.reason}", error_code=REQUEST_LIMIT_EXCEEDED) from None
        finally:
            stop.finished.set()


# Models from code: MLflow runs this file to build the pyfunc, so loading unpickles nothing.
MODEL_CODE = """from mlflow.models import set_model

from pipeline.registry.pyfunc import DemoirePyfunc

set_model(DemoirePyfunc())
"""


def serving_config(infer: InferParams, device: str = "auto") -> dict:
    """The logged model's `model_config`: tiling, max_side and falloff from params.yaml's infer section; the device."""
    return {"tile_size": infer.tile_size, "tile_overlap": infer.tile_overlap, "tile_batch": infer.tile_batch,
            "device": device, "max_pixels": min(infer.max_pixels, SERVE_MAX_PIXELS), "max_side": infer.max_side,
            "falloff": infer.falloff}


# What an environment built for the logged model (`mlflow models serve` without `--env-manager local`, `mlflow models
# build-docker`) installs: the project's core dependencies (pyproject.toml; mlflow comes with the environment), which
# its code imports on loading (OpenCV, scikit-image, matplotlib through the library's modules), torch as trained.
PYFUNC_REQUIREMENTS = ["torch==2.13.0", "torchmetrics", "albumentations", "opencv-python-headless", "numpy", "pillow",
                       "pillow-heif", "scikit-image", "matplotlib", "pandas", "pyarrow", "pydantic", "pyyaml", "typer",
                       "rich", "psutil", "filelock"]


def log_demoire_model(model_dir: Path, infer: InferParams | None = None):
    """Log the trained model as a pyfunc under the active run, tiling as `infer` says; return its ModelInfo."""
    example = np.full((32, 32, 3), 128, dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "model"
        bundle.mkdir()
        for name in (WEIGHTS_FILE, SPEC_FILE):
            shutil.copy2(Path(model_dir) / name, bundle / name)
        entry = Path(tmp) / "demoire_model.py"
        entry.write_text(MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(entry),
            artifacts={"model_dir": str(bundle)},
            code_paths=[str(Path(pipeline.__file__).parent)],
            signature=IMAGE_SIGNATURE,
            input_example=example,
            model_config=serving_config(infer or InferParams()),
            pip_requirements=PYFUNC_REQUIREMENTS,
        )


def resolve_model_uri(uri: str) -> tuple[str, str, str | None]:
    """(name, version number, alias or None) of a `models:/name@alias` or `models:/name/version` URI; one line
    listing what exists when it names nothing."""
    name, _, alias = uri.removeprefix("models:/").partition("@")
    if alias:
        return name, resolve_alias(name, alias), alias
    name, _, version = name.partition("/")
    if not name or not version:
        raise ModelNotFoundError(f"{uri} names no version: use models:/NAME/VERSION or models:/NAME@ALIAS "
                                 "(e.g. models:/demoire@champion)")
    return name, resolve_version(name, version), None


def load_registered_model(uri: str, device):
    """The torch module behind a `models:/name@alias` (or `models:/name/version`) URI."""
    return load_registered_model_and_spec(uri, device)[0]


def load_registered_model_and_spec(uri: str, device):
    """The torch module behind a `models:/` URI and its architecture spec."""
    from pipeline.models import load_model

    connect(Path.cwd())  # read-only: no store is created, a dead server is one line
    name, number, _ = resolve_model_uri(uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:  # by number: an alias moved meanwhile (a promotion, a rollback) would load another version
            files = download_model_files(f"models:/{name}/{number}", Path(tmp))
        except MlflowException as exc:
            raise ModelNotFoundError(f"cannot load {uri}: {str(exc).splitlines()[0]}") from None
        return load_model(files, device)


def model_version_info(uri: str) -> dict:
    """Name, version, alias, run and the metrics tagged on the version behind a `models:/name@alias` or
    `models:/name/version` URI (what `demoire serve` answers on GET /model)."""
    client = connect(Path.cwd())
    name, number, alias = resolve_model_uri(uri)
    version = client.get_model_version(name, number)
    metrics = {}
    for key, value in sorted(version.tags.items()):
        if key.startswith(("test_", "real_")):
            try:
                metrics[key] = float(value)
            except ValueError:
                pass
    return {"name": name, "version": str(version.version), "alias": alias or None, "run_id": version.run_id,
            "promotion": version.tags.get("promotion"),
            "last_promote": _last_promote(version.tags, f"{name} v{version.version}"), "metrics": metrics}


def _last_promote(tags: dict[str, str], label: str) -> dict | None:
    """When, by what and how the latest `demoire promote` after the registration decided on a version (None if none
    did): `promotion` is the registration's decision, and a promote may have made the version champion since."""
    from pipeline.registry.promotion import promote_entries  # not at the top: promotion imports this module

    history = promote_entries(tags, label)
    latest = history[-1] if history else None
    return {key: latest.get(key) for key in ("at", "source", "promote", "reason")} if isinstance(latest, dict) else None


def download_model_files(uri: str, dst: Path) -> Path:
    """Download the weights of a logged demoiré pyfunc into `dst`; return the folder holding model.pt and model.json.

    Only they and the MLmodel saying where they are: the logged model also holds a copy of `pipeline/` (its
    code_paths), about a hundred files that a load from a tracking server would fetch one request each.
    """
    mlmodel = mlflow.artifacts.download_artifacts(f"{uri}/MLmodel", dst_path=str(dst / "meta"))
    weights = Model.load(mlmodel).flavors["python_function"]["artifacts"]["model_dir"]["path"]
    return Path(mlflow.artifacts.download_artifacts(f"{uri}/{weights}", dst_path=str(dst / "files")))

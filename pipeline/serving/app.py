"""The web app of `demoire serve`: a page for people and `POST /restore` for programs.

- `GET /` the page (drop photos, compare before/after, download); `GET /health`; `GET /model`.
- `POST /restore`: the image as multipart field `file`, as JSON `{"image": "<base64>"}`, or as the raw
  body (`Content-Type: image/…`); `format` (png | jpg | webp) and `quality` as query parameters, form
  fields or JSON keys. Answers the restored image, tiled for any size, upright and in sRGB.
- Limits answer 4xx with `{"error": "one line"}`: 413 for an upload over `max_upload_bytes` or an image
  over `max_pixels`, 415 for what is not a JPEG/PNG/WebP/TIFF/BMP/GIF, 400 for an unreadable image or
  body, 422 for a bad format or quality or an image the format cannot store (WebP: 16,383 px a side), 503
  (with Retry-After) when `concurrency` restorations run and `queue` more wait or upload. Uploads are held
  in memory, never spooled to disk (the app writes no file), and read only once a queue place is taken, so
  at most `concurrency + queue` bodies are held; a request whose client has gone is dropped while it waits
  and stopped at the next tile while it is restored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import re
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath
from typing import Callable
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pipeline.errors import DemoireError, ParamsError, shown_value
from pipeline.inference import RestoreStopped
from pipeline.photos import (DEFAULT_QUALITY, OUTPUT_FORMATS, ImageTooLargeError, OutputTooLargeError,
                             UnsupportedImageError, check_output_format, check_output_size, encode_image, read_photo)

log = logging.getLogger(__name__)
DISCONNECT_POLL_S = 1.0  # how often a waiting request checks that its client is still there
# HxWx3 uint8 RGB and a should_stop() asked between tiles in, restored HxWx3 uint8 out (or RestoreStopped)
Restore = Callable[[np.ndarray, Callable[[], bool]], np.ndarray]


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts; everything above is answered with a 4xx or 503, never a 500."""

    max_upload_bytes: int = 50 * 2**20
    max_pixels: int = 100_000_000
    concurrency: int = 1  # restorations at once (one uses every core of a CPU already)
    queue: int = 8  # requests waiting for a slot; more get 503
    # An upload that sends nothing for this long is dropped (408): a client that stalls holds no queue place.
    upload_idle_s: float = 30.0
    # Nor one that drips: past the first upload_idle_s, an upload slower on average than this is dropped (408).
    # 2 KiB/s (16 kbit/s) lets a slow mobile link through; one byte every 29 s held a place for as long as it liked.
    upload_min_bytes_per_s: float = 2048.0

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_pixels < 1 or self.concurrency < 1 or self.queue < 0:
            raise ParamsError(f"serve limits {self}: upload size, pixels and concurrency must be ≥ 1, queue ≥ 0")
        if not (self.upload_idle_s > 0 and self.upload_min_bytes_per_s > 0):
            raise ParamsError(f"serve limits {self}: upload_idle_s and upload_min_bytes_per_s must be > 0")


class RequestError(Exception):
    """A bad request: its HTTP status and one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _status_of(exc: DemoireError) -> int:
    """413 for images over the pixel limits, 415 for what is not a photo, 422 for options, else 400."""
    if isinstance(exc, ImageTooLargeError):
        return 413
    if isinstance(exc, UnsupportedImageError):
        return 415
    if isinstance(exc, OutputTooLargeError):
        return 422
    return 422 if isinstance(exc, ParamsError) else 400


def create_app(restore: Restore, model_info: dict, limits: ServeLimits = ServeLimits()) -> FastAPI:
    """The app around `restore`; `model_info` is what `GET /model` answers."""
    app = FastAPI(title="demoire", docs_url=None, redoc_url=None, openapi_url=None)
    slots = asyncio.Semaphore(limits.concurrency)
    state = {"waiting": 0, "busy": 0}
    page = resources.files("pipeline.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # an unknown path (404) or method (405) answers as every other error does: {"error": …}
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: what load balancers and uptime checks send
    async def health() -> dict:
        return {"status": "ok", "busy": state["busy"], "waiting": state["waiting"]}

    @app.get("/model")
    async def model() -> dict:
        limits_info = {"max_upload_bytes": limits.max_upload_bytes, "max_pixels": limits.max_pixels,
                       "concurrency": limits.concurrency, "queue": limits.queue, "formats": list(OUTPUT_FORMATS),
                       "upload_idle_s": limits.upload_idle_s, "upload_min_bytes_per_s": limits.upload_min_bytes_per_s}
        return {**model_info, "limits": limits_info}

    @app.post("/restore")
    async def restore_endpoint(request: Request) -> Response:
        # every admitted request holds its body (read, or being read) until its restoration ends
        if state["busy"] + state["waiting"] >= limits.concurrency + limits.queue:
            raise RequestError(503, f"busy: {state['busy']} restoring and {state['waiting']} waiting "
                                    f"(limit {limits.concurrency} + {limits.queue}); retry later")
        # an upload being read waits in the queue: no more bodies in memory than concurrency + queue
        state["waiting"] += 1
        watcher: asyncio.Task | None = None
        try:
            data, options, upload_name = await _read_upload(request, limits)
            fmt, quality = _output_options(options)
            gone = _Gone()
            # one watcher from here to the answer (the body is read: nothing else receives from the client now)
            watcher = asyncio.create_task(_watch_disconnect(request, gone))
            await _acquire_unless_gone(slots, gone)
        except BaseException:
            if watcher is not None:
                watcher.cancel()
            raise
        finally:
            state["waiting"] -= 1
        state["busy"] += 1
        try:
            body = await run_in_threadpool(_restore_encoded, restore, data, limits.max_pixels, fmt, quality,
                                           gone.thread_event.is_set)
        except RestoreStopped:
            raise RequestError(499, "the client disconnected while its photo was restored") from None
        except DemoireError as exc:
            raise RequestError(_status_of(exc), str(exc)) from None
        finally:
            watcher.cancel()
            state["busy"] -= 1
            slots.release()
        return Response(body, media_type=OUTPUT_FORMATS[fmt][1],
                        headers={"Content-Disposition": content_disposition(upload_name, fmt)})

    return app


def _output_options(options: dict) -> tuple[str, int]:
    """The request's output format and quality, checked (422 naming the value)."""
    fmt = str(options.get("format") or "png").lower().replace("jpeg", "jpg")
    quality = options.get("quality", DEFAULT_QUALITY)
    # a whole number, or its digits (query and form fields are text): not 90.7, true or null
    # not "+-5" or "²", which int refuses; nor thousands of digits, which int refuses too (a ValueError, a 500)
    if isinstance(quality, str) and re.fullmatch(r"\s*[+-]?[0-9]{1,20}\s*", quality):
        quality = int(quality)
    if not isinstance(quality, int) or isinstance(quality, bool):
        shown = repr(quality) if isinstance(quality, str) else json.dumps(quality)  # JSON values as JSON writes them
        raise RequestError(422, f"quality {shown_value(shown)}: choose a whole number from 1 to 100")
    try:
        check_output_format(fmt, quality)
    except ParamsError as exc:
        raise RequestError(422, str(exc)) from None
    return fmt, quality


class _Gone:
    """That a request's client has disconnected, for the event loop (waiting) and the restoring thread."""

    def __init__(self) -> None:
        self.loop_event, self.thread_event = asyncio.Event(), threading.Event()

    def set(self) -> None:
        self.thread_event.set()
        self.loop_event.set()


async def _watch_disconnect(request: Request, gone: _Gone) -> None:
    """Set `gone` once the client has disconnected: a waiting request is dropped, a restoration stops at a tile."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    gone.set()


async def _acquire_unless_gone(slots: asyncio.Semaphore, gone: _Gone) -> None:
    """Wait for a restoration slot; give up (499, which no client reads) once the client has gone."""
    acquire, left = asyncio.ensure_future(slots.acquire()), asyncio.ensure_future(gone.loop_event.wait())
    try:
        await asyncio.wait({acquire, left}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request cancelled (the server stopping): a slot acquired now would be held for good
        acquire.cancel()
        acquire.add_done_callback(lambda task: None if task.cancelled() else slots.release())
        raise
    finally:
        left.cancel()
    if acquire.done() and not acquire.cancelled():
        if not gone.loop_event.is_set():
            return
        slots.release()  # acquired as the client left: give it back
    else:
        acquire.cancel()
        try:
            await acquire
        except asyncio.CancelledError:
            pass
        else:  # acquired between the wait and the cancel (on Python 3.11 a cancel can come too late): give it back
            slots.release()
    raise RequestError(499, "the client disconnected while waiting")


def _restore_encoded(restore: Restore, data: bytes, max_pixels: int, fmt: str, quality: int,
                     should_stop: Callable[[], bool]) -> bytes:
    """Decode (upright, sRGB), restore, encode: the work of one request, run in a worker thread."""
    photo = read_photo(data, max_pixels, name="the upload")
    check_output_size(fmt, photo.rgb.shape[1], photo.rgb.shape[0], "the upload")
    return encode_image(restore(photo.rgb, should_stop), fmt, quality)


MAX_NAME_STEM = 100  # characters of an upload's name kept in the answer's


def content_disposition(upload_name: str | None, fmt: str) -> str:
    """The answer's file name as the web page names its downloads, `NAME-restored.FMT` after the uploaded file's
    name (`restored.FMT` without one), in RFC 6266's form: an ASCII name as it is, any other as `filename*`
    (percent-encoded UTF-8) beside an ASCII fallback. A client's full path (old browsers send one) is cut to its
    last part, its stem to 100 characters (a header of thousands would be one clients refuse)."""
    base = PurePosixPath((upload_name or "").replace("\\", "/")).name
    stem = re.sub(r"\.[^.]*$", "", base).strip()[:MAX_NAME_STEM]  # the page's own rule: the last suffix off
    name = f"{stem}-restored.{fmt}" if stem else f"restored.{fmt}"
    if name.isascii() and name.isprintable() and not set(name) & set('"\\;'):
        return f'inline; filename="{name}"'
    return f"inline; filename=\"restored.{fmt}\"; filename*=UTF-8''{quote(name, safe='')}"


async def _read_upload(request: Request, limits: ServeLimits) -> tuple[bytes, dict, str | None]:
    """The image bytes, the options and the file name (multipart only) of a request, its body read within `limits`
    (size, idle time, rate)."""
    limit = limits.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"upload of {int(declared):,} bytes is over the limit of {limit:,} bytes")
    body = await _read_body(request, limits)
    options = dict(request.query_params)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        data, fields, name = _multipart(request.headers.get("content-type", ""), body, limit)
        return data, {**options, **fields}, name
    if kind == "application/json":
        try:
            payload = json.loads(body)
            encoded = payload["image"]
        except (ValueError, TypeError, KeyError):
            raise RequestError(400, 'JSON body must be {"image": "<base64 of the image file>"} '
                                    '(optional "format", "quality")') from None
        try:
            return base64.b64decode(encoded.split(",", 1)[-1], validate=True), {**options, **payload}, None
        except (ValueError, TypeError, AttributeError, binascii.Error):
            raise RequestError(400, '"image" is not base64: send the image file\'s bytes base64-encoded '
                                    '(a data: URL works too)') from None
    if kind.startswith("image/") or kind == "application/octet-stream":
        if not body:
            raise RequestError(400, "empty body: send the image file's bytes")
        return body, options, None
    sent = f"content type {kind!r}" if kind else ("an empty Content-Type header" if "content-type" in request.headers
                                                  else "no Content-Type header")
    raise RequestError(415, f"{sent}: send multipart/form-data with field 'file', "
                            "application/json with base64 'image', or the image bytes as image/*")


async def _read_body(request: Request, limits: ServeLimits) -> bytes:
    """A request's body: 413 over the upload limit, 408 when idle or too slow (ServeLimits), 499 when the client
    leaves."""
    idle_s, rate, limit = limits.upload_idle_s, limits.upload_min_bytes_per_s, limits.max_upload_bytes
    clock = asyncio.get_running_loop().time
    began = last = clock()
    chunks, size, stream = [], 0, request.stream()
    try:
        while True:
            # a byte every idle_s at least, and all of it within idle_s + size / rate
            wait = min(last + idle_s, began + idle_s + size / rate) - clock()
            try:
                chunk = await asyncio.wait_for(anext(stream), max(wait, 0.0))
            except StopAsyncIteration:
                return b"".join(chunks)
            last = clock()
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"upload is over the limit of {limit:,} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # left mid-upload: nobody reads the answer, and it is no server error to log
        raise RequestError(499, "the client disconnected while sending its upload") from None
    except asyncio.TimeoutError:
        # one message for both limits: with a small body they fall due together
        now = clock()
        raise RequestError(408, f"the upload was too slow: {size:,} bytes in {now - began:.0f} s, none in the last "
                                f"{now - last:.0f} s (the server wants a byte every {idle_s:g} s at least and "
                                f"{rate:,.0f} bytes/s on average); send it again") from None


def _opens_as_image(data: bytes) -> bool:
    """Whether `data` is an image file's bytes, not a form field's text: PIL reads its header (not its pixels)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Exception:  # noqa: BLE001  (PIL's errors for what is no image vary by the format it tried)
        return False


def _multipart(content_type: str, body: bytes, limit: int) -> tuple[bytes, dict, str | None]:
    """Field `file`'s bytes, the other fields and the file's name, if it has one, of a multipart body, parsed in
    memory."""
    from python_multipart import create_form_parser
    from python_multipart.exceptions import FormParserError

    files, fields, raw, names = {}, {}, {}, {}

    def on_field(field) -> None:
        name = field.field_name.decode("utf-8", "replace")
        raw[name] = field.value or b""
        fields[name] = raw[name].decode("utf-8", "replace")

    def on_file(file) -> None:
        file.file_object.seek(0)
        field = file.field_name.decode("utf-8", "replace")
        files[field] = file.file_object.read()
        names[field] = (file.file_name or b"").decode("utf-8", "replace")

    headers = {"Content-Type": content_type.encode("latin-1"), "Content-Length": str(len(body)).encode()}
    try:
        # MAX_MEMORY_FILE_SIZE above the upload limit: parts stay in memory, never spooled to disk
        parser = create_form_parser(headers, on_field, on_file, config={"MAX_MEMORY_FILE_SIZE": limit + 1})
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise RequestError(400, f"unreadable multipart body: {exc}") from None
    if "file" not in files and "file" in raw and _opens_as_image(raw["file"]):
        # a part that names its file only as filename*= (RFC 5987; some clients' non-ASCII names) or not at all is a
        # field to the parser: an image's bytes are the upload
        files["file"] = raw.pop("file")
        del fields["file"]
    if "file" not in files:
        if "file" in fields:  # curl -F file=photo.jpg, without the @ that sends the file
            raise RequestError(400, "multipart field 'file' is text, not a file: send the file's content "
                                    "(curl: -F file=@photo.jpg)")
        raise RequestError(400, f"multipart body has no file field 'file' (fields: {', '.join(files) or 'none'})")
    if not files["file"]:
        raise RequestError(400, "the field 'file' is empty")
    return files["file"], fields, names.get("file")

"""POST /restore, /health, /model and the limits, over real HTTP to a real uvicorn server on a free port."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import logging
import re
import select
import socket
import tempfile
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from pipeline.inference import RestoreStopped, restore_image
from pipeline.photos import encode_image
from pipeline.serving.app import RequestError, ServeLimits, _acquire_unless_gone, _Gone, _output_options


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_page_health_and_model(serve_app, client):
    url = serve_app(ServeLimits(max_upload_bytes=10_000, max_pixels=5_000))
    page = client.get(url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="files"' in page.text and "restore?format=" in page.text
    assert client.get(url + "/health").json() == {"status": "ok", "busy": 0, "waiting": 0}
    head = client.head(url + "/health")  # an uptime check's request: was 405
    assert head.status_code == 200 and head.content == b""
    model = client.get(url + "/model").json()
    assert model["name"] == "tiny" and model["architecture"] == "unet"
    assert model["limits"] == {"max_upload_bytes": 10_000, "max_pixels": 5_000, "concurrency": 1, "queue": 8,
                               "formats": ["png", "jpg", "webp"], "upload_idle_s": 30.0, "upload_min_bytes_per_s": 2048.0}
    missing, wrong_method = client.get(url + "/nope"), client.get(url + "/restore")
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found: GET /nope"})
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"error": "Method Not Allowed: GET /restore"})
    assert wrong_method.headers["allow"] == "POST"


def test_restore_takes_multipart_base64_json_and_raw_bytes_tiled_at_any_size(serve_app, client, tiny_net, rng):
    url = serve_app()
    image = rng.integers(0, 256, (97, 150, 3), dtype=np.uint8)  # over the 64-pixel tile: restored in tiles
    expected = restore_image(tiny_net, image, "cpu", 64, 8)

    multipart = client.post(url + "/restore", files={"file": ("photo.png", _png(image), "image/png")})
    assert multipart.status_code == 200 and multipart.headers["content-type"] == "image/png"
    assert multipart.headers["content-disposition"] == 'inline; filename="photo-restored.png"'  # as the page names it
    np.testing.assert_array_equal(_decode(multipart.content), expected)

    as_json = client.post(url + "/restore", json={"image": base64.b64encode(_png(image)).decode(), "format": "png"})
    assert as_json.status_code == 200
    np.testing.assert_array_equal(_decode(as_json.content), expected)

    raw = client.post(url + "/restore?format=webp&quality=80", content=_png(image), headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/webp"
    assert raw.headers["content-disposition"] == 'inline; filename="restored.webp"'  # no file name sent
    assert _decode(raw.content).shape == image.shape

    # JPEG with quality: a form field or a query parameter; lower quality, fewer bytes
    small, large = (client.post(url + "/restore", files={"file": ("p.png", _png(image))},
                                data={"format": "jpg", "quality": str(q)}) for q in (20, 95))
    assert small.headers["content-type"] == large.headers["content-type"] == "image/jpeg"
    assert len(small.content) < len(large.content)
    assert large.content == encode_image(expected, "jpg", 95)  # the restored image, encoded as asked


@pytest.mark.parametrize("sent, disposition", [
    ("IMG_0042.HEIC", 'inline; filename="IMG_0042-restored.jpg"'),
    ("C:\\Users\\me\\shot.png", 'inline; filename="shot-restored.jpg"'),  # an old browser's full path
    ("café.png", "inline; filename=\"restored.jpg\"; filename*=UTF-8''caf%C3%A9-restored.jpg"),
    ('a"b;c.png', "inline; filename=\"restored.jpg\"; filename*=UTF-8''a%22b%3Bc-restored.jpg"),
    ("", 'inline; filename="restored.jpg"'),
    (".hidden", 'inline; filename="restored.jpg"'),  # the page's rule: the last suffix off, nothing left
    ("é" * 5000 + ".png", "inline; filename=\"restored.jpg\"; filename*=UTF-8''" + "%C3%A9" * 100 + "-restored.jpg"),
])
def test_the_answer_is_named_after_the_uploaded_file(sent, disposition):
    from pipeline.serving.app import content_disposition

    assert content_disposition(sent, "jpg") == disposition


def test_a_file_part_named_only_by_filename_star_is_the_upload(serve_app, client, rng):
    # RFC 5987's filename*= alone (what some clients write for a non-ASCII name): the parser sees a field, not a file
    url = serve_app()
    image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    body = (b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''caf%C3%A9.png\r\n"
            b"Content-Type: image/png\r\n\r\n" + _png(image) + b"\r\n--XX--\r\n")
    result = client.post(url + "/restore", content=body, headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert result.status_code == 200, result.text
    assert _decode(result.content).shape == image.shape
    # a file name sent as the field's text (curl -F file=photo.jpg), in Latin-1: still told to send the file
    latin = b"--XX\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nphoto\xe9.jpg\r\n--XX--\r\n"
    refused = client.post(url + "/restore", content=latin, headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert refused.status_code == 400 and "is text, not a file" in refused.json()["error"], refused.text


def test_a_portrait_phone_photo_comes_back_upright(serve_app, client, rng):
    url = serve_app()
    landscape = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)  # stored 50 wide, 30 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the phone was held upright
    buffer = io.BytesIO()
    Image.fromarray(landscape).save(buffer, format="JPEG", exif=exif.tobytes())
    result = client.post(url + "/restore", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert result.status_code == 200
    assert _decode(result.content).shape == (50, 30, 3)


def test_limits_and_bad_input_answer_4xx_with_one_line_never_500(serve_app, client, rng):
    url = serve_app(ServeLimits(max_upload_bytes=20_000, max_pixels=2_500))
    small = _png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))  # 1,600 pixels
    too_many_pixels = _png(np.zeros((60, 60, 3), dtype=np.uint8))  # 3,600 pixels, a few hundred bytes
    too_many_bytes = _png(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) * 4
    icon = io.BytesIO()  # a format PIL reads, but no photo
    Image.new("RGB", (16, 16)).save(icon, format="ICO")
    cases = [
        (dict(files={"file": ("big.png", too_many_bytes)}), 413, "over the limit of 20,000 bytes"),
        (dict(content=iter([too_many_bytes]), headers={"Content-Type": "image/png"}), 413, "over the limit of 20,000 bytes"),
        (dict(files={"file": ("wide.png", too_many_pixels)}), 413, "60x60 = 3,600 pixels, over the limit of 2,500"),
        (dict(files={"file": ("notes.txt", b"hello, not an image")}), 415,
         "not a JPEG, PNG, WebP, HEIC, AVIF, TIFF, BMP or GIF"),
        (dict(files={"file": ("favicon.ico", icon.getvalue())}), 415,
         "the upload is in ICO format; send a photo in JPEG, PNG, WebP, HEIC"),
        (dict(files={"file": ("cut.png", small[:200])}), 400, "cannot read image from the upload"),
        (dict(files={"other": ("a.png", small)}), 400, "no file field 'file' (fields: other)"),
        (dict(files={"file": ("empty.png", b"")}), 400, "the field 'file' is empty"),
        (dict(json={"picture": "x"}), 400, 'JSON body must be {"image"'),
        (dict(json={"image": "not base64!"}), 400, '"image" is not base64: send the image file'),
        (dict(files={"file": (None, "photo.jpg")}), 400, "multipart field 'file' is text, not a file: send the file's content"),
        (dict(content=b"{nope", headers={"Content-Type": "application/json"}), 400, "JSON body must be"),
        (dict(content=b"", headers={"Content-Type": "image/png"}), 400, "empty body"),
        (dict(content=small, headers={"Content-Type": "text/plain"}), 415, "content type 'text/plain'"),
        (dict(content=b""), 415, "no Content-Type header: send multipart/form-data"),
        (dict(files={"file": ("a.png", small)}, data={"format": "gif"}), 422, "format 'gif': choose one of png, jpg, webp"),
        (dict(files={"file": ("a.png", small)}, data={"quality": "0"}), 422, "quality 0: choose 1 to 100"),
        (dict(files={"file": ("a.png", small)}, data={"quality": "high"}), 422, "quality 'high'"),
        *((dict(files={"file": ("a.png", small)}, data={"quality": q}), 422, f"quality {q!r}") for q in ("+-5", "²")),
        # JSON keeps its types: only a whole number is a quality (null, a list, 1e400, 90.7 and true were 500s or
        # quietly cut)
        *((dict(content=f'{{"image": "{base64.b64encode(small).decode()}", "quality": {q}}}',
                headers={"Content-Type": "application/json"}), 422, f"quality {shown}: choose a whole number")
          for q, shown in (("null", "null"), ("[5]", "[5]"), ("1e400", "Infinity"), ("90.7", "90.7"), ("true", "true"),
                           ('{"a": 1}', '{"a": 1}'))),
    ]
    for request, status, message in cases:
        response = client.post(url + "/restore", **request)
        assert response.status_code == status, (request, response.text)
        error = response.json()["error"]
        assert message in error and "\n" not in error, (message, error)
    assert client.post(url + "/restore", files={"file": ("a.png", small)}).status_code == 200  # still serving



@pytest.mark.parametrize("options, message", [
    ({"format": "x" * 10_000}, f"format '{'x' * 79}… (9,922 characters more): choose one of png, jpg, webp"),
    ({"quality": "9" * 5_000}, f"quality '{'9' * 79}… (4,922 characters more): choose a whole number from 1 to 100"),
    ({"quality": 10**1000}, f"quality 1{'0' * 79}… (921 characters more): choose 1 to 100"),
    ({"quality": [1] * 10_000}, f"quality [{'1, ' * 26}1… (29,920 characters more): choose a whole number"),
])
def test_a_long_format_or_quality_is_shown_cut_to_a_line(options, message):
    # a 422 echoed the value in full: megabytes for a large field (and a 500 for 5,000 digits)
    with pytest.raises(RequestError) as info:
        _output_options(options)
    assert info.value.status == 422 and str(info.value).startswith(message), str(info.value)[:200]

def test_an_image_the_format_cannot_store_is_refused_before_it_is_restored(serve_app, client):
    calls = []

    def counted(restore):
        return lambda image, should_stop: calls.append(image.shape) or restore(image, should_stop)

    url = serve_app(wrap=counted)
    wide = _png(np.zeros((4, 16_400, 3), dtype=np.uint8))  # over WebP's 16,383 pixels a side (was a 500)
    response = client.post(url + "/restore?format=webp", files={"file": ("wide.png", wide)})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "the upload is 16400x4: webp stores at most 16,383 pixels a side; choose png"
    assert calls == []
    as_png = client.post(url + "/restore", files={"file": ("wide.png", wide)})
    assert as_png.status_code == 200 and calls == [(4, 16_400, 3)]


def test_uploads_are_never_spooled_to_disk(serve_app, client, rng, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where python-multipart would spool a large part
    url = serve_app(ServeLimits(max_upload_bytes=8 * 2**20))
    image = rng.integers(0, 256, (700, 800, 3), dtype=np.uint8)
    data = _png(image)
    assert len(data) > 1.5 * 2**20  # above python-multipart's default in-memory size (1 MiB)
    response = client.post(url + "/restore", files={"file": ("large.png", data)})
    assert response.status_code == 200 and _decode(response.content).shape == image.shape
    assert list(tmp_path.iterdir()) == []


def _gated(release: threading.Event, started: threading.Event):
    """A restorer that holds each request until `release` is set: the server's real restore, made to wait."""
    def wrap(restore):
        def held(image, should_stop):
            started.set()
            release.wait(30)
            return restore(image, should_stop)
        return held
    return wrap


@pytest.mark.parametrize("queue", [0, 1])
def test_busy_server_queues_then_answers_503(serve_app, client, rng, queue):
    release, started = threading.Event(), threading.Event()
    url = serve_app(ServeLimits(concurrency=1, queue=queue), wrap=_gated(release, started))
    photo = _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    answers = {}

    def send(key):
        answers[key] = client.post(url + "/restore", files={"file": ("a.png", photo)}).status_code

    first = threading.Thread(target=send, args=("first",))
    first.start()
    assert started.wait(30)
    waiting = None
    if queue:
        waiting = threading.Thread(target=send, args=("queued",))
        waiting.start()
        deadline = time.monotonic() + 10
        while client.get(url + "/health").json()["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert client.get(url + "/health").json() == {"status": "ok", "busy": 1, "waiting": queue}
    busy = client.post(url + "/restore", files={"file": ("a.png", photo)})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert busy.json()["error"].startswith(f"busy: 1 restoring and {queue} waiting")
    release.set()
    first.join(30)
    if waiting:
        waiting.join(30)
    assert answers == ({"first": 200, "queued": 200} if queue else {"first": 200})
    assert client.get(url + "/health").json()["busy"] == 0



def _stalled_upload(url: str, declared: int = 10_000) -> socket.socket:
    """A client that sends a request's headers and the start of its body, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=30)
    client.sendall(f"POST /restore HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
                   f"Content-Length: {declared}\r\n\r\n".encode() + b"\x89PNG" * 4)
    return client


def _health_until(client, url: str, expected: dict) -> dict:
    deadline = time.monotonic() + 30
    while (health := client.get(url + "/health").json()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return health


def test_uploads_in_progress_count_against_the_limit_and_a_stalled_or_dropped_one_frees_its_place(
        serve_app, client, rng, caplog):
    url = serve_app(ServeLimits(concurrency=1, queue=1, upload_idle_s=5))  # 5 s: time to ask, loaded
    photo = _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    stalled = [_stalled_upload(url), _stalled_upload(url)]
    assert _health_until(client, url, {"status": "ok", "busy": 0, "waiting": 2})["waiting"] == 2
    # nothing is restored, but two bodies are held: before, any number of stalled uploads were let in
    refused = client.post(url + "/restore", files={"file": ("a.png", photo)})
    assert refused.status_code == 503 and refused.json()["error"].startswith("busy: 0 restoring and 2 waiting")
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addHandler(caplog.handler)
    try:
        stalled[0].close()  # leaves mid-upload: was "Exception in ASGI application" and a traceback in the log
        timed_out = http.client.HTTPResponse(stalled[1])  # the other sends nothing more: answered once idle 5 s
        timed_out.begin()  # (the head and the body may come in two packets)
        assert timed_out.status == 408, timed_out.status
        error = json.loads(timed_out.read())["error"]
        assert re.match(r"the upload was too slow: 16 bytes in [56] s, none in the last [56] s \(the server wants a "
                        r"byte every 5 s at least and 2,048 bytes/s on average\); send it again$", error), error
        assert _health_until(client, url, {"status": "ok", "busy": 0, "waiting": 0})["waiting"] == 0
    finally:
        uvicorn_errors.removeHandler(caplog.handler)
        stalled[1].close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert client.post(url + "/restore", files={"file": ("a.png", photo)}).status_code == 200


def test_an_upload_that_drips_is_dropped_once_slower_than_the_minimum_rate(serve_app, client):
    # never idle for 2 s, so only the rate can stop it: before, one byte every 29 s held a place for good
    url = serve_app(ServeLimits(concurrency=1, queue=0, upload_idle_s=2, upload_min_bytes_per_s=16))
    dripping = _stalled_upload(url)  # 16 bytes: 3 s allowed, and 1/16 s more for each byte after
    began = time.monotonic()
    try:
        while not select.select([dripping], [], [], 0.5)[0]:  # no answer yet
            assert time.monotonic() - began < 20, "the dripping upload was never answered"
            dripping.sendall(b"\0")  # a byte every half second: the idle timeout never fires
        answered_after = time.monotonic() - began
        answer = http.client.HTTPResponse(dripping)
        answer.begin()
        assert answer.status == 408, answer.status
        error = json.loads(answer.read())["error"]
        assert re.match(r"the upload was too slow: \d\d bytes in \d+ s, none in the last [01] s .* and 16 bytes/s on "
                        "average", error), error
    finally:
        dripping.close()
    assert 2.5 < answered_after < 10
    assert _health_until(client, url, {"status": "ok", "busy": 0, "waiting": 0})["waiting"] == 0


def test_a_waiting_request_whose_client_has_gone_is_dropped(serve_app, client, rng):
    release, started = threading.Event(), threading.Event()
    url = serve_app(ServeLimits(concurrency=1, queue=2), wrap=_gated(release, started))
    photo = _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    first = threading.Thread(target=lambda: client.post(url + "/restore", files={"file": ("a.png", photo)}))
    first.start()
    assert started.wait(30)
    with pytest.raises(httpx.ReadTimeout):  # a client that gives up while its request waits for the slot
        httpx.post(url + "/restore", files={"file": ("a.png", photo)}, timeout=1.0)
    deadline = time.monotonic() + 10
    while client.get(url + "/health").json()["waiting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(url + "/health").json() == {"status": "ok", "busy": 1, "waiting": 0}  # not restored for nobody
    release.set()
    first.join(30)


def test_a_restoration_whose_client_has_gone_stops_at_the_next_tile(serve_app, client, rng):
    asked = threading.Event()

    def until_stopped(restore):
        def run(image, should_stop):  # a restoration of endless tiles, asking between them as restore_image does
            deadline = time.monotonic() + 30
            while not should_stop():
                asked.set()
                if time.monotonic() > deadline:
                    return restore(image, should_stop)
                time.sleep(0.02)
            raise RestoreStopped()
        return run

    url = serve_app(wrap=until_stopped)
    photo = _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with pytest.raises(httpx.ReadTimeout):  # 5 s: time for a loaded machine to reach the restoration first
        httpx.post(url + "/restore", files={"file": ("a.png", photo)}, timeout=5.0)
    assert asked.is_set()
    deadline = time.monotonic() + 10
    while client.get(url + "/health").json()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(url + "/health").json() == {"status": "ok", "busy": 0, "waiting": 0}  # the slot is free


def test_a_slot_is_taken_only_for_a_client_still_there_and_never_lost():
    async def scenario(slot_free: bool, gone_first: bool, leave_while_waiting: bool):
        slots, gone = asyncio.Semaphore(1), _Gone()
        if not slot_free:
            await slots.acquire()  # another request restores
        if gone_first:
            gone.set()
        if leave_while_waiting:
            asyncio.get_running_loop().call_later(0.05, gone.set)
        try:
            await _acquire_unless_gone(slots, gone)
            outcome = "acquired"
        except RequestError as exc:
            outcome = exc.status
        if not slot_free:
            slots.release()
        return outcome, slots._value  # the slots free once the other request is done

    assert asyncio.run(scenario(True, False, False)) == ("acquired", 0)
    assert asyncio.run(scenario(True, True, False)) == (499, 1)  # free, but its client left: given back
    assert asyncio.run(scenario(False, False, True)) == (499, 1)  # left while waiting: nothing held

    async def cancelled_while_waiting() -> int:  # the request's own task cancelled (the server stopping)
        slots = asyncio.Semaphore(1)
        await slots.acquire()  # another request restores
        waiting = asyncio.create_task(_acquire_unless_gone(slots, _Gone()))
        await asyncio.sleep(0.01)
        waiting.cancel()
        slots.release()  # the other is done, just as the cancel lands
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.01)
        return slots._value

    assert asyncio.run(cancelled_while_waiting()) == 1  # before: 0, the slot held for good by nobody


def test_demoire_serve_takes_its_upload_limits_from_the_command_line(tmp_path):
    import os
    import signal

    from pipeline.models import ModelSpec, build_model, save_model
    from tests.serving.conftest import start_server

    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    server, url = start_server(tmp_path / "model", tmp_path, "--upload-idle-s", "12", "--upload-min-kib-s", "0.5")
    try:
        limits = httpx.get(url + "model", timeout=30).json()["limits"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    assert (limits["upload_idle_s"], limits["upload_min_bytes_per_s"]) == (12.0, 512.0)

"""`demoire serve`: the web page and image API of `pipeline.serving` under uvicorn."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from pipeline.cli.common import (DEFAULT_MODEL, FALLOFF_OPTION, MAX_SIDE_OPTION, Device, app, check_model_exists, err,
                                 fail, infer_params)
from pipeline.errors import DemoireError, InputDataError


@app.command()
def serve(
    model: str = typer.Option(DEFAULT_MODEL,
                              help="model folder, models:/<name>@<alias>, or an exported .onnx / .pt file"),
    host: str = typer.Option("127.0.0.1", help="address to listen on; 0.0.0.0 exposes it to the network"),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free one, printed)"),
    device: Device = typer.Option("auto", help="where the model runs"),
    params: Path | None = typer.Option(None, help="params file whose infer section applies [default: ./params.yaml if present]"),
    tile: int | None = typer.Option(None, help="tile side in pixels [default: infer.tile_size]"),
    overlap: int | None = typer.Option(None, help="pixels shared by neighbouring tiles [default: infer.tile_overlap]"),
    max_pixels: int | None = typer.Option(None, help="refuse larger images (413), width x height [default: infer.max_pixels]"),
    max_side: int | None = MAX_SIDE_OPTION,
    falloff: float | None = FALLOFF_OPTION,
    max_upload_mb: float = typer.Option(50.0, min=0.001, help="refuse larger uploads (413), MiB"),
    concurrency: int = typer.Option(1, min=1, help="photos restored at once"),
    queue: int = typer.Option(8, min=0, help="requests waiting for a slot; more are answered 503"),
    upload_idle_s: float = typer.Option(30.0, min=0.001, help="drop an upload that sends nothing this long (408), s"),
    upload_min_kib_s: float = typer.Option(2.0, min=0.001, help="past its first --upload-idle-s, drop an upload "
                                                                  "slower on average than this (408), KiB/s"),
) -> None:
    """A web page to drop photos on (before/after slider, full resolution, download) and an API:
    POST /restore (multipart field `file`, JSON base64 `image`, or raw image bytes; ?format=png|jpg|webp&quality=90),
    GET /health, GET /model. Writes no files."""
    import python_multipart  # noqa: F401  (the page's uploads: missing, one line now rather than a 500 per upload)
    import uvicorn

    from pipeline.inference import check_tiling, restore_image, spatial_multiple
    from pipeline.model_source import describe_model, load_model_and_spec, pin_model
    from pipeline.serving.app import ServeLimits, create_app

    try:
        cfg = infer_params(params, tile_size=tile, tile_overlap=overlap, max_pixels=max_pixels,
                           max_side=max_side, falloff=falloff)
        with err.status(f"loading {model}"):
            check_model_exists(model)
            pinned, registered = pin_model(model)
            net, torch_device, spec = load_model_and_spec(pinned, device)
        check_tiling(cfg.tile_size, cfg.tile_overlap, cfg.tile_batch, spatial_multiple(net))
        limits = ServeLimits(int(max_upload_mb * 2**20), cfg.max_pixels, concurrency, queue, upload_idle_s,
                             upload_min_kib_s * 1024)
        info = describe_model(model, net, spec, registered) | {"device": str(torch_device), "tile_size": cfg.tile_size,
                                                   "tile_overlap": cfg.tile_overlap, "max_side": cfg.max_side,
                                                   "falloff": cfg.falloff}
        listener = _listen(host, port)
    except DemoireError as exc:
        fail(exc)

    def restore(image, should_stop):
        return restore_image(net, image, torch_device, cfg.tile_size, cfg.tile_overlap, cfg.tile_batch,
                             max_side=cfg.max_side, falloff=cfg.falloff, should_stop=should_stop)

    bound_port = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {info['name']}" + (f" v{info['version']}" if info["version"] else "") +
               f" ({spec.name}, {torch_device}) at http://{shown}:{bound_port}/  (Ctrl+C stops)", err=True)
    server = uvicorn.Server(uvicorn.Config(create_app(restore, info, limits), log_level="warning",
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a one-line error when the port is taken or the address is wrong."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise InputDataError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                             "(0 picks a free one) or --host") from None
    listener.listen(128)
    listener.set_inheritable(True)
    return listener

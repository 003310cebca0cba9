"""A person's path through `demoire serve`: headless Chromium picks a photo on the page and sees it restored."""

from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
from PIL import Image

from pipeline.models import ModelSpec, build_model, save_model
from tests.serving.browser import Browser, chromium_paths
from tests.serving.conftest import start_server

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(None in chromium_paths(), reason="needs Debian's chromium and chromium-driver "
                                                        "(apt-get install chromium chromium-driver; .ci/run does)"),
]


def test_a_photo_dropped_on_the_page_comes_back_restored(tmp_path):
    spec = ModelSpec("unet", 8, 2)
    save_model(build_model(spec, seed=0), spec, tmp_path / "model")
    rows = np.linspace(0, 255, 90)[:, None, None]
    stripes = (127 + 100 * np.sin(np.arange(160) * 1.3))[None, :, None]
    photo = np.clip(rows * 0.5 + stripes * np.array([1.0, 0.6, 0.3]), 0, 255).astype(np.uint8)  # 160x90, moiré-like
    Image.fromarray(photo).save(tmp_path / "screen photo.png")
    (tmp_path / "notes.txt").write_text("not a photo")

    server, url = start_server(tmp_path / "model", tmp_path, "--tile", "64", "--overlap", "8")
    browser = None
    try:
        browser = Browser(tmp_path / "chromium-profile", tmp_path / "chromedriver.log")
        browser.open(url)
        assert browser.wait_for("return document.getElementById('model').textContent.startsWith('model: model')")
        browser.upload("#files", tmp_path / "screen photo.png")
        browser.wait_for("return document.querySelector('.result[data-status]')")
        state = browser.run("""
            const card = document.querySelector('.result'), after = card.querySelector('img.after');
            const link = card.querySelector('a.download');
            return {status: card.dataset.status, text: card.querySelector('.status').textContent,
                    width: after.naturalWidth, height: after.naturalHeight, visible: !after.hidden,
                    download: link.hidden ? null : link.getAttribute('download'), href: link.href};""")
        assert state["status"] == "done", state
        assert (state["width"], state["height"], state["visible"]) == (160, 90, True)
        assert state["download"] == "screen photo-restored.png" and state["href"].startswith("blob:")
        assert re.fullmatch(r"restored 160×90 in [0-9.]+ s", state["text"])
        # the slider uncovers the restored image; full resolution toggles
        browser.run("const s = document.querySelector('.slider'); s.value = 20; s.dispatchEvent(new Event('input'));")
        assert browser.run("return document.querySelector('img.after').style.clipPath") == "inset(0px 0px 0px 20%)"
        browser.run("document.querySelector('.zoom').click();")
        assert browser.run("return document.querySelector('.compare').classList.contains('full')")
        browser.screenshot(tmp_path / "page.png")
        assert Image.open(tmp_path / "page.png").size[0] > 0

        # a TIFF: the server restores it, the browser cannot show the original; the restored photo is shown alone,
        # at its size (it was squeezed into the broken original's 68x16 box)
        browser.run("document.querySelector('.zoom').click();")  # fit to page again
        Image.fromarray(photo).save(tmp_path / "scan.tiff")
        browser.upload("#files", tmp_path / "scan.tiff")
        browser.wait_for("return document.querySelectorAll('.result[data-status]').length == 2")
        shown = browser.run("""
            const card = document.querySelector('.result');
            const box = card.querySelector('img.after').getBoundingClientRect();
            return {text: card.querySelector('.status').textContent, width: box.width, height: box.height,
                    alone: card.classList.contains('no-before')};""")
        assert shown["alone"] and (round(shown["width"]), round(shown["height"])) == (160, 90), shown
        assert shown["text"].endswith("(this browser cannot show the original's format: the restored photo alone)")

        # a file that is not a photo: the page says why, in one line, and the server stays up
        browser.upload("#files", tmp_path / "notes.txt")
        browser.wait_for("return document.querySelectorAll('.result[data-status]').length == 3")
        text = browser.run("return document.querySelector('.result').querySelector('.status').textContent")
        assert text == ("not restored: cannot read image from the upload: not a JPEG, PNG, WebP, HEIC, AVIF, TIFF, BMP "
                        "or GIF file, or one too damaged to recognise")
    finally:
        if browser is not None:
            browser.close()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # the server wrote nothing in its folder
        "chromedriver.log", "chromium-profile", "model", "notes.txt", "page.png", "scan.tiff", "screen photo.png",
        "serve.log"]

import platform
import subprocess
import sys

import pytest

from pipeline.allocator import reuse_freed_memory

# Render two default-preset pairs at 256² in a fresh process (malloc's settings are per process) and
# print a digest of their bytes and whether malloc took the settings.
RENDER = """
import hashlib, sys
import pipeline.data.synthetic as synthetic
from pipeline.config import parse_params
from pipeline.sources import collect_sources
if sys.argv[1] == "off":
    synthetic.reuse_freed_memory = lambda: False
cfg = parse_params({"synthesize": {"n_pairs": 2, "size": 256}}).synthesize
specs, _ = collect_sources(cfg.sources.bundled, cfg.sources.procedural, [])
digest = hashlib.sha256()
for index in range(2):
    moire, clean, _ = synthetic.render_pair(index, specs[index], cfg, 7)
    digest.update(moire.tobytes() + clean.tobytes())
from pipeline.allocator import reuse_freed_memory
print(digest.hexdigest(), reuse_freed_memory.cache_info().currsize)
"""


def rendered(mode: str) -> list[str]:
    """(digest of the pairs, entries in reuse_freed_memory's cache) from a fresh process."""
    done = subprocess.run([sys.executable, "-c", RENDER, mode], check=True, capture_output=True, text=True)
    return done.stdout.split()


def test_synthesis_bytes_do_not_depend_on_keeping_freed_memory():
    on, off = rendered("on"), rendered("off")
    assert on[0] == off[0]
    assert (on[1], off[1]) == ("1", "0")  # rendering asked malloc once; the patched run never did


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_glibc_takes_the_settings():
    assert reuse_freed_memory() is True

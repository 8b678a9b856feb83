"""The locally built test and demo images (no registry needed): see stacks/build-images.sh.

`ensure_test_images()` runs the build script, which skips every image whose tag already exists
with the same recipe, so calling it at the start of each test session or demo is cheap.
Within one process the script runs once (unless `force`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import RuntimeAdapterError

BUSYBOX_IMAGE = "swarmlet/busybox:1"
"""Static busybox: /bin/sh, sleep, nc, wget, httpd... Its CMD is `sh`."""

WEB_IMAGE = "swarmlet/web:1"
"""HTTP on port 80; every GET answers "<name>\\n" (name: $NAME, else the container's hostname).
"/" answers 200; other paths 404 with the same body. SIGTERM stops it at once (exit 0)."""

WEB_IMAGE_V2 = "swarmlet/web:2"
"""As WEB_IMAGE, answering "v2 <name>\\n"."""

TEST_IMAGES: tuple[str, ...] = (BUSYBOX_IMAGE, WEB_IMAGE, WEB_IMAGE_V2)

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "stacks" / "build-images.sh"

_built = False


def ensure_test_images(*, force: bool = False, timeout_s: float = 300.0) -> None:
    """Build the test images that are missing or stale. Raises RuntimeAdapterError with the
    script's output when it fails (no Docker, no busybox-static...)."""
    global _built
    if _built and not force:
        return
    if not BUILD_SCRIPT.is_file():
        raise RuntimeAdapterError(
            f"cannot build the test images: {BUILD_SCRIPT} is missing "
            "(run from a source checkout of swarmlet)"
        )
    command = ["bash", str(BUILD_SCRIPT), *(["--force"] if force else [])]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeAdapterError(f"building the test images took over {timeout_s} s") from e
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise RuntimeAdapterError(
            f"building the test images failed (exit {result.returncode}): {output[-2000:]}"
        )
    _built = True

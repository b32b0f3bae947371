"""A full-height PNG of a run report in headless Chromium, offline (`make report-screenshot`).

Headless Chromium shoots the window, not the page: the window is made taller than any report
and the blank page background below the report's end is cut off afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BACKGROUND = (0xF3, 0xF4, 0xF6)  # the report's page colour (recsys.report CSS)
MARGIN = 24  # pixels of background kept below the report's last line


def find_browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def shoot(browser: str, page: Path, out: Path, width: int, height: int) -> None:
    """A `width` x `height` screenshot of `page`, with no network, first-run or sync traffic."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--screenshot={out}",
             f"--window-size={width},{height}", "--hide-scrollbars", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"{browser} made no screenshot: {result.stderr[-2000:]}")


def content_height(pixels: np.ndarray) -> int:
    """Rows down to the last one that is not all page background."""
    rgb = np.rint(pixels[:, :, :3] * 255) if pixels.dtype.kind == "f" else pixels[:, :, :3]
    drawn = np.flatnonzero((rgb != np.array(BACKGROUND)).any(axis=(1, 2)))
    return int(drawn[-1]) + 1 if drawn.size else 0


def full_page(browser: str, page: Path, out: Path, width: int = 1280, tallest: int = 16000) -> int:
    """Screenshot `page` whole into `out`; returns its height in pixels."""
    import matplotlib.image

    shoot(browser, page, out, width, tallest)
    pixels = matplotlib.image.imread(out)
    height = content_height(pixels)
    if height + MARGIN > tallest:
        raise RuntimeError(f"{page} is taller than {tallest} px; raise the window height")
    matplotlib.image.imsave(out, pixels[: height + MARGIN])
    return height + MARGIN


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="the report's HTML file")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        print("report-screenshot: needs chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    height = full_page(browser, args.page, args.out, args.width)
    print(f"wrote {args.out} ({args.width} x {height} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

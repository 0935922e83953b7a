"""A screenshot of an atlas page (``googlenet atlas ... --out DIR``) as headless Chromium renders it from disk.

    PYTHONPATH=. python tools/atlas_screenshot.py DIR/index.html docs/interpret_atlas.png [--width 1280]
                                                  [--out-width 900]

Uses the tests' Selenium helper (Debian's chromium + chromedriver); the window grows to the page's full height, and
the PNG is reduced to an 8-bit palette so it stays small enough to commit.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import chromium_driver

    p = argparse.ArgumentParser()
    p.add_argument("page")
    p.add_argument("out")
    p.add_argument("--width", type=int, default=1100)
    p.add_argument("--max-height", type=int, default=4000)
    p.add_argument("--out-width", type=int, default=None, help="scale the PNG down to this width")
    args = p.parse_args()
    driver = chromium_driver(args.width, 800)
    try:
        driver.get(Path(args.page).resolve().as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
        loaded, total = driver.execute_script("const i = [...document.images];"
                                              "return [i.filter(x => x.complete && x.naturalWidth > 0).length, i.length]")
        if loaded != total:
            print(f"only {loaded} of {total} images loaded", file=sys.stderr)
            return 1
        # No scrollbar while measuring: it takes ~15 px of width and makes the rows wrap as the final shot won't.
        driver.execute_script("document.documentElement.style.overflow = 'hidden'")
        # The content's own height (scrollHeight is at least the window's, which starts at 800 px).
        height = min(args.max_height, driver.execute_script(
            "return Math.ceil(document.body.getBoundingClientRect().bottom) + 24"))
        chrome = driver.execute_script("return window.outerHeight - window.innerHeight")
        driver.set_window_size(args.width, height + chrome)
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.crop((0, 0, img.width, min(img.height, height)))
    if args.out_width and args.out_width < img.width:
        img = img.resize((args.out_width, round(img.height * args.out_width / img.width)), Image.LANCZOS)
    img = img.quantize(colors=48, dither=Image.Dither.NONE)  # grey pictures and text: 48 colours keep it legible and small
    img.save(args.out, optimize=True)
    print(f"{args.out}: {img.size[0]}x{img.size[1]}, {Path(args.out).stat().st_size // 1024} KiB, {total} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

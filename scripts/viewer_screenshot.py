"""Screenshot a viewer page (``tagretrieval.viewer.write_viewer``) with headless Chromium, e.g. for the README.

    python scripts/viewer_screenshot.py --html runs/viewer.html --out docs/images/viewer.png
    python scripts/viewer_screenshot.py --html runs/viewer.html --out viewer.png --search rock --select 0

Needs ``pip install selenium`` and ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tagretrieval.viewer.browser import headless_chromium


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, required=True, help="viewer page to open")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--width-px", type=int, default=1400)
    parser.add_argument("--height-px", type=int, default=850)
    parser.add_argument("--scale", type=float, default=1.0, help="device pixel ratio (2: a sharper, 2x larger PNG)")
    parser.add_argument("--color-by", choices=["cluster", "tag", "category", "split"], default=None,
                        help="colouring to show (default: the page's, by cluster)")
    parser.add_argument("--search", default=None, help="tag to search: its top 10 songs are listed and ringed")
    parser.add_argument("--select", type=int, default=None,
                        help="index of a song to select: points are coloured by cosine distance to it")
    args = parser.parse_args()
    if not args.html.is_file():
        parser.error(f"no such page: {args.html}")

    driver = headless_chromium(width_px=args.width_px, height_px=args.height_px)
    try:
        # the PNG is exactly width x height CSS pixels (the window size would include the browser's frame)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": args.width_px, "height": args.height_px, "deviceScaleFactor": args.scale, "mobile": False})
        driver.get(args.html.resolve().as_uri())
        deadline = time.monotonic() + 30
        while not driver.execute_script("return !!(window.viewerState && window.viewerState.ready)"):
            if time.monotonic() > deadline:
                raise SystemExit(f"{args.html}: the page did not start; console: {driver.get_log('browser')}")
            time.sleep(0.1)
        if args.color_by:
            driver.execute_script("window.viewer.setColorMode(arguments[0])", args.color_by)
        if args.select is not None:
            driver.execute_script("window.viewer.select(arguments[0])", args.select)
        if args.search:
            driver.find_element("id", "search").send_keys(args.search + "\n")
            if driver.execute_script("return window.viewerState.searchTag") is None:
                raise SystemExit(f"no tag matches --search {args.search!r}")
        driver.execute_script("document.getElementById('player').pause()")
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
    print(f"wrote {args.out}")
    for message in errors:
        print(f"console error: {message}")


if __name__ == "__main__":
    main()

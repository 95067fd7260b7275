"""Take the README's dashboard screenshot (examples/web/dashboard.png) in headless Chromium.

The workspace is the demo's (``examples/demo.py``: scifact-mini, simulated users, refreshes and
trials), made first when ``--workspace`` holds none. The demo's users all search within minutes,
so a week of earlier searches is replayed into the log with past timestamps (through the public
import API, as an app importing its history would) for the per-day chart to have days to show.
Then the service runs on loopback, the page is opened, a search is made through its search box,
and the whole page is saved as a PNG.

Run: ``python examples/web/screenshot.py [--workspace DIR] [--out PNG]`` (needs the Debian
``chromium`` and ``chromium-driver`` packages and ``selenium``, as the browser tests do).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAY = 86400.0


def backfill(rt, days: int, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    """Replay a share of the logged searches (with their clicks and ratings) on each of the ``days`` days before today."""
    events = list(rt.feedback.export_events())
    queries = [e for e in events if e["type"] == "query" and not re.search(r"-\d+d$", e["query_id"])]  # not earlier replays
    feedback: dict[str, list[dict]] = {}
    for e in events:
        if e["type"] != "query":
            feedback.setdefault(e["query_id"], []).append(e)
    rng = random.Random(seed)
    lines = []
    for d in range(days, 0, -1):
        share = 0.15 + 0.5 * (days - d) / days  # traffic grows towards today
        for q in rng.sample(queries, int(share * len(queries))):
            shift = d * DAY + rng.uniform(-3600, 3600)
            qid = f"{q['query_id']}-{d}d"
            lines.append({**{k: v for k, v in q.items() if k != "trial"}, "query_id": qid, "ts": q["ts"] - shift})
            for f in feedback.get(q["query_id"], []):
                lines.append({**{k: v for k, v in f.items() if k != "feedback_id"}, "query_id": qid, "ts": f["ts"] - shift})
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)
    print(rt.import_feedback(fh.name).summary())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", type=Path, default=HERE.parent / ".demo-workspace")
    parser.add_argument("--out", type=Path, default=HERE / "dashboard.png")
    parser.add_argument("--days", type=int, default=6, help="Days of earlier feedback to replay.")
    parser.add_argument("--query", default="vitamin D deficiency and bone fractures", help="What the screenshot searches for.")
    args = parser.parse_args()

    if not (args.workspace / "CURRENT").is_file():
        subprocess.run([sys.executable, str(HERE.parent / "demo.py"), "--workspace", str(args.workspace), "--rounds", "4"], check=True)

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ragtune import Ragtune
    from ragtune.server import create_app

    rt = Ragtune(args.workspace, progress=False)
    if args.days:
        backfill(rt, args.days)  # a second run finds every replayed event already present
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1360,1000",
                 f"--user-data-dir={tempfile.mkdtemp()}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.loaded") == "true")
        driver.find_element(By.ID, "search-input").send_keys(args.query)
        driver.find_element(By.CSS_SELECTOR, "#search-form button").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results a[data-doc]"))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1360, height + 20)
        time.sleep(0.5)
        driver.save_screenshot(str(args.out))
        print(f"wrote {args.out} ({height} px high)")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()

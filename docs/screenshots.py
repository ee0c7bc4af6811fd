"""Screenshots for the README, taken in headless Chromium: a study's HTML report, and its MLflow runs page.

    python docs/screenshots.py STUDY.toml --report REPORT.html [--out docs/img]

Run it from the folder the study was run in (where its stores are). It needs
Debian's chromium and chromium-driver, and selenium (the `test` extra):

- `report.png`: the top of the report (what was searched, the recommendation,
  the fronts), as a reader first sees it;
- `mlflow_runs.png`: `ltstudy ui STUDY.toml` started on a free port, the runs
  page it prints opened, and the study's parent run expanded to show a nested
  run per trial. The server and all its processes are stopped afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ltstudy-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.profile = profile
    return driver


def close(driver) -> None:
    profile = driver.profile
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def report_shot(report: Path, out: Path, height: int = 2200) -> None:
    driver = browser(1300, height)
    try:
        driver.get(report.resolve().as_uri())
        time.sleep(0.5)
        driver.save_screenshot(str(out))
    finally:
        close(driver)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_shot(study: Path, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "ltstudy.cli", "ui", str(study), "--port", str(port)],
                          stdout=subprocess.PIPE, text=True)
    try:
        banner = ui.stdout.readline()
        url = banner.split(": ", 1)[1].split("  (Ctrl-C")[0].strip()
        deadline = time.monotonic() + 90
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or ui.poll() is not None:
                raise SystemExit(f"the MLflow UI did not start on port {port}")
            time.sleep(0.5)
        driver = browser(1400, 900)
        try:
            base = url.split("/#/")[0]
            driver.get(base + "/")
            driver.execute_script("localStorage.clear();"
                                  "localStorage.setItem('mlflow.assistant.panelOpen_v1','false');"
                                  "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1','true');")
            driver.get(url)
            driver.refresh()
            wait = WebDriverWait(driver, 60)
            wait.until(lambda d: "matching runs" in d.find_element(By.TAG_NAME, "body").text)
            expander = "button[data-component-id$='runnamecellrenderer.tsx_46']"  # (the run-name cell's +)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expander))
            for button in driver.find_elements(By.CSS_SELECTOR, expander):
                button.click()  # expand the study's parent run: its trials' runs appear nested under it
            wait.until(lambda d: "trial-" in d.find_element(By.TAG_NAME, "body").text)
            time.sleep(1.5)
            driver.save_screenshot(str(out))
        finally:
            close(driver)
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report_shot(args.report, args.out / "report.png")
    print(f"wrote {args.out / 'report.png'}")
    mlflow_shot(args.study, args.out / "mlflow_runs.png")
    print(f"wrote {args.out / 'mlflow_runs.png'}")


if __name__ == "__main__":
    main()

"""The documentation's screenshots, taken from studies this script runs itself, in headless Chromium.

    python docs/screenshots.py [--out docs/img] [--work DIR]

In a fresh folder (a temporary one, or --work DIR, kept afterwards: run again with the same DIR and the finished
studies are reused) it runs the quickstart (`studies/quickstart.toml`, about two minutes on two cores) and a small
range study (`prune_rate` and `rewind_iter` searched as ranges, binned by the report), writes their reports, and
takes:

- `report.png`: the top of the quickstart's report (what was searched, the recommendation, the fronts);
- `report_ranges.png`: the range study's report at its table of every setting combination, with bins;
- `mlflow_runs.png`: `ltstudy ui studies/quickstart.toml` on a free port, the runs page it prints, the study's
  parent run expanded to show a nested run per trial (with the Dataset column);
- `dashboard.png`: `ltstudy dashboard studies/quickstart.toml`, the study's page in optuna-dashboard.

Each server is stopped with everything it started. It needs Debian's chromium and chromium-driver, selenium and
optuna-dashboard (the `test` extra). Look at every picture before committing it.
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

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

RANGES = """\
# A range study for the report's binned sections (docs/screenshots.py).
[study]
name = "ranges"
sampler = "random"
seed = 0
n_trials = 16
objectives = ["ticket_sparsity", "train_iterations"]
controls = ["random-reinit"]

[data]
name = "digits"

[train]
iterations = 300
eval_every = 30

[search]
prune_rate = { low = 0.1, high = 0.6 }
rewind_iter = { low = 0, high = 100, step = 20 }
rounds = 5
output_rate = 0.5
"""


def ltstudy(work: Path, *argv: str) -> None:
    """`ltstudy ARGV` in `work`, with this interpreter (so an uninstalled checkout works too)."""
    print("$ ltstudy " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "ltstudy.cli", *argv], cwd=work, check=True)


def run_studies(work: Path) -> None:
    (work / "studies").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "studies" / "quickstart.toml", work / "studies" / "quickstart.toml")
    (work / "studies" / "ranges.toml").write_text(RANGES)
    for name in ("quickstart", "ranges"):
        ltstudy(work, "run", f"studies/{name}.toml", "--quiet")  # (a finished study: nothing to run)
        ltstudy(work, "report", f"studies/{name}.toml")


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ltstudy-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    driver.profile = profile
    return driver


def close(driver) -> None:
    profile = driver.profile
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def report_shot(report: Path, out: Path, height: int, heading: str | None = None) -> None:
    """The report in a 1300-pixel-wide window, from its top or from the section titled `heading`."""
    from selenium.webdriver.common.by import By

    driver = browser(1300, height)
    try:
        driver.get(report.resolve().as_uri())
        if heading:
            (element,) = [h for h in driver.find_elements(By.TAG_NAME, "h2") if h.text.strip() == heading]
            driver.execute_script("arguments[0].scrollIntoView(true);", element)
        time.sleep(0.5)
        driver.save_screenshot(str(out))
    finally:
        close(driver)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ltstudy ui|dashboard STUDY --port P` in `work`: the URL it prints, once its port answers."""

    def __init__(self, work: Path, command: str, study: str):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "ltstudy.cli", command, study, "--port", str(self.port)],
                                     cwd=work, stdout=subprocess.PIPE, text=True)
        for banner in self.proc.stdout:  # (the server's own log lines may come first)
            if "http://" in banner and ": " in banner:
                break
        else:
            raise SystemExit(f"ltstudy {command} printed no URL")
        self.url = banner.split(": ", 1)[1].split("  (Ctrl-C")[0].strip()

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 180  # (only against a hang: the server answers when it is up)
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.__exit__()
                raise SystemExit(f"the server did not start on port {self.port}")
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def mlflow_shot(work: Path, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with Server(work, "ui", "studies/quickstart.toml") as server:
        driver = browser(1400, 900)
        try:
            base = server.url.split("/#/")[0]
            driver.get(base + "/")
            driver.execute_script("localStorage.clear();"
                                  "localStorage.setItem('mlflow.assistant.panelOpen_v1','false');"
                                  "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1','true');")
            driver.get(server.url)
            driver.refresh()
            wait = WebDriverWait(driver, 120)
            wait.until(lambda d: "matching runs" in d.find_element(By.TAG_NAME, "body").text)
            expander = "button[data-component-id$='runnamecellrenderer.tsx_46']"  # (the run-name cell's +)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expander))
            for button in driver.find_elements(By.CSS_SELECTOR, expander):
                button.click()  # expand the study's parent run: its trials' runs appear nested under it
            wait.until(lambda d: "trial-" in d.find_element(By.TAG_NAME, "body").text)
            wait.until(lambda d: "digits" in d.find_element(By.TAG_NAME, "body").text)  # the Dataset column
            time.sleep(1.5)
            driver.save_screenshot(str(out))
        finally:
            close(driver)


def dashboard_shot(work: Path, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with Server(work, "dashboard", "studies/quickstart.toml") as server:
        driver = browser(1400, 1000)
        try:
            driver.get(server.url)
            wait = WebDriverWait(driver, 120)
            wait.until(lambda d: "ticket_sparsity" in d.find_element(By.TAG_NAME, "body").text)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot, svg.main-svg"))
            time.sleep(3)  # (plotly draws its points after the frame appears)
            driver.save_screenshot(str(out))
        finally:
            close(driver)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder of the PNGs (default: docs/img)")
    ap.add_argument("--work", type=Path, help="run the studies in this folder and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise SystemExit(f"{path} is missing: apt-get install chromium chromium-driver")
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve() if args.work else Path(tempfile.mkdtemp(prefix="ltstudy-screenshots-"))
    try:
        run_studies(work)
        shots = {"report.png": lambda o: report_shot(work / "quickstart_report.html", o, 2480),
                 "report_ranges.png": lambda o: report_shot(work / "ranges_report.html", o, 1800,
                                                            "Every setting combination"),
                 "mlflow_runs.png": lambda o: mlflow_shot(work, o),
                 "dashboard.png": lambda o: dashboard_shot(work, o)}
        for name, shoot in shots.items():
            shoot(args.out / name)
            print(f"wrote {args.out / name}", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

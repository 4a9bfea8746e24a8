"""Draws docs/grafana-dashboard.png: the panels of docs/grafana-dashboard.json as their
queries answer in a real run, without Grafana.

It runs qiao (two workers, four threads each, --metrics-bind) on a small app under a
mixed load (fast and slow requests, 404s, app errors, refused requests, uploads spooled to
disk, one worker more then one fewer, a reload, --max-requests recycling) while a real
Prometheus scrapes it every second; then it sends each panel's PromQL, with Grafana's
variables filled in, to that Prometheus' HTTP API (``query_range``) and draws the series in
the dashboard's grid with matplotlib. A panel whose query returns nothing fails the run:
the dashboard is wrong, or the metric it shows is.

    pip install -e '.[dashboard]'       # matplotlib; Prometheus: Debian's prometheus
    python bench/dashboard.py [--seconds 120] [--out docs/grafana-dashboard.png]

It is a picture of the dashboard's queries, not a Grafana screenshot, and not a
benchmark: the load is light and its numbers mean nothing about speed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
SCRAPE = 1.0  # seconds between Prometheus' scrapes
STEP = 2.0  # seconds between the points of a drawn series

APP = '''
import random, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(random.uniform(0.02, 0.4))
    elif path == "/error":
        raise RuntimeError("a failing view, for the dashboard's 5xx")
    elif path == "/upload":
        size = str(len(environ["wsgi.input"].read())).encode()
        start_response("201 Created", [("Content-Length", str(len(size)))])
        return [size]
    elif path != "/":
        start_response("404 Not Found", [("Content-Length", "9")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listens on port {port}")


class Load:
    """Client threads sending a mix of requests until stopped; `busy` of them (raised over
    the run) send at once, the others wait."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.active = 1
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(clients)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        conn: http.client.HTTPConnection | None = None
        while not self.stop.is_set():
            if index >= self.active:
                time.sleep(0.2)
                continue
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn = self._one(conn, rng)
            except (OSError, http.client.HTTPException):
                conn = None
                time.sleep(0.05)
            time.sleep(rng.uniform(0.005, 0.03))

    def _one(self, conn: http.client.HTTPConnection, rng: random.Random):
        roll = rng.random()
        if roll < 0.004:
            self._refused(rng)
            return conn
        if roll < 0.02:
            size = rng.choice([2_000, 200_000])  # the larger past --body-buffer-size
            conn.request("POST", "/upload", body=b"x" * size)
        elif roll < 0.03:
            conn.request("GET", "/error")
        elif roll < 0.08:
            conn.request("GET", "/missing")
        elif roll < 0.3:
            conn.request("GET", "/slow")
        elif roll < 0.35:
            conn.request("HEAD", "/")
        else:
            conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return None if response.will_close else conn

    def _refused(self, rng: random.Random) -> None:
        """A request the server refuses before the app: a malformed one (400) or one whose
        head is too large (431)."""
        raw = (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"
               if rng.random() < 0.5 else
               b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            try:
                s.sendall(raw)
                while s.recv(65536):
                    pass
            except OSError:
                pass


def query_range(api: str, expr: str, start: float, end: float) -> list[dict]:
    args = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": STEP})
    with urllib.request.urlopen(f"{api}/api/v1/query_range?{args}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def grafana_expr(expr: str) -> str:
    """A panel's PromQL with Grafana's variables filled in as the dashboard would: every
    job and instance, and $__rate_interval as Grafana computes it (four scrapes at least,
    one step and a scrape past it)."""
    interval = max(4 * SCRAPE, STEP + SCRAPE)
    return (expr.replace("$__rate_interval", f"{interval:g}s")
            .replace('"$job"', '".*"').replace('"$instance"', '".*"'))


def legend(fmt: str, labels: dict[str, str]) -> str:
    """A series' name as Grafana's legend format gives it (one instance here: unnamed)."""
    text = fmt.replace("{{instance}} ", "")
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def fetch_panels(api: str, start: float, end: float) -> list[tuple[dict, list]]:
    """Each panel with its series: (legend, times, values) per result of each target."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = []
    empty = []
    for panel in dashboard["panels"]:
        series = []
        for target in panel.get("targets", []):
            for result in query_range(api, grafana_expr(target["expr"]), start, end):
                times = [float(t) - start for t, _ in result["values"]]
                values = [float(v) for _, v in result["values"]]
                series.append((legend(target.get("legendFormat", ""), result["metric"]),
                               times, values))
        if not series:
            empty.append(panel["title"])
        panels.append((panel, series))
    if empty:
        sys.exit("panels whose queries returned nothing: " + ", ".join(empty))
    return panels


def draw(panels: list[tuple[dict, list]], out: Path, title: str, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p, _ in panels)
    fig = plt.figure(figsize=(16, rows * 0.36 + 0.8), facecolor="#111217")
    grid = fig.add_gridspec(rows, 24, left=0.04, right=0.99, top=1 - 0.7 / (rows * 0.36 + 0.8),
                            bottom=0.02, hspace=0, wspace=0)
    fig.suptitle(title, color="#d8d9da", fontsize=13, x=0.01, ha="left")
    palette = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9",
               "#8ab8ff", "#fade2a", "#ca95e5", "#96d98d"]
    for panel, series in panels:
        pos = panel["gridPos"]
        ax = fig.add_subplot(grid[pos["y"]:pos["y"] + pos["h"], pos["x"]:pos["x"] + pos["w"]])
        ax.set_facecolor("#181b1f")
        ax.set_title(panel["title"], color="#d8d9da", fontsize=9, loc="left", pad=4)
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.tick_params(colors="#8e8e8e", labelsize=7)
        ax.grid(color="#2c3235", linewidth=0.6)
        for i, (name, times, values) in enumerate(series):
            ax.plot(times, values, color=palette[i % len(palette)], linewidth=1.2, label=name)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, unit=unit: fmt(v, unit)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{int(v) // 60}:{int(v) % 60:02d}"))
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, seconds)
        ax.legend(loc="upper left", fontsize=6.5, frameon=False, labelcolor="#d8d9da",
                  ncol=min(len(series), 5))
        # Inner margins, so that neighbouring panels' labels do not touch.
        box = ax.get_position()
        ax.set_position([box.x0 + 0.012, box.y0 + 0.012, box.width - 0.018,
                         box.height - 0.03])
    fig.savefig(out, dpi=90, facecolor=fig.get_facecolor())


def fmt(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.0f}%" if value >= 0.1 or value == 0 else f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"
    scale = 1024 if unit in ("bytes", "Bps") else 1000
    suffix = {"bytes": "B", "Bps": "B/s", "reqps": " req/s"}.get(unit, "")
    for prefix in ("", "k", "M", "G"):
        if abs(value) < scale or prefix == "G":
            text = f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"
            if unit in ("bytes", "Bps") and prefix:
                prefix += "i"
            return f"{text} {prefix}{suffix}".replace("  ", " ").strip()
        value /= scale
    return str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "grafana-dashboard.png")
    args = parser.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        sys.exit("prometheus is not installed (Debian's package prometheus)")
    try:
        import matplotlib  # noqa: F401 - only whether it is there
    except ImportError:
        sys.exit("matplotlib is not installed: pip install -e '.[dashboard]'")

    with tempfile.TemporaryDirectory(prefix="qiao-dashboard-") as tmp:
        work = Path(tmp)
        (work / "dashboard_app.py").write_text(APP)
        port, metrics, prom = free_port(), free_port(), free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "qiao", "dashboard_app:app", "-b", f"127.0.0.1:{port}",
             "-w", "2", "--threads", "4", "--metrics-bind", f"127.0.0.1:{metrics}",
             "--max-requests", "1500", "--max-requests-jitter", "500",
             "--body-buffer-size", "65536", "--log-level", "warning"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        (work / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {SCRAPE:g}s\n"
            "scrape_configs:\n  - job_name: app\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n"
        )
        scraper = subprocess.Popen(
            [prometheus, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{prom}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port)
            wait_port(prom)
            load = Load(port, clients=12)
            start = time.time()
            load.start()
            # The story the picture tells: load rising, one worker more (TTIN), a reload
            # (HUP), one worker fewer (TTOU), load falling.
            events = {0.3: signal.SIGTTIN, 0.5: signal.SIGHUP, 0.7: signal.SIGTTOU}
            while (elapsed := time.time() - start) < args.seconds:
                share = elapsed / args.seconds
                load.active = max(1, round(len(load.threads) * min(1.0, 0.15 + share * 1.6)
                                           * (1.0 if share < 0.85 else 0.4)))
                for at, sig in list(events.items()):
                    if share >= at:
                        server.send_signal(sig)
                        del events[at]
                time.sleep(0.5)
            load.stop.set()
            time.sleep(3 * SCRAPE)
            end = time.time()
            panels = fetch_panels(f"http://127.0.0.1:{prom}", start, end)
        finally:
            scraper.terminate()
            server.terminate()
            scraper.wait(20)
            server.wait(30)
    draw(panels, args.out, f"qiao: {DASHBOARD.name}, each panel's query over a "
                           f"{args.seconds:g} s run (drawn by bench/dashboard.py)", end - start)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

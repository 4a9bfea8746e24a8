"""Draws results.png from results.json: per workload, req/s (bar, min–max whiskers) and p99 per server.

qiao is red, the peers blue; the references and a --baseline build of qiao are grey: they
are measured beside the peers, not counted as one.

Usage: python plot.py results.json results.png   (needs matplotlib: bench/.venv has it)
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from run import REFERENCES  # beside this file; stdlib-only imports


def main() -> None:
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    all_cells = doc["cells"] + doc.get("baseline_cells", [])
    baseline = {c["server"] for c in doc.get("baseline_cells", [])}
    grey = {*REFERENCES, *baseline}
    workloads = [w for w in doc["workloads"] if any(c["workload"] == w and c.get("summary") for c in all_cells)]
    idle = [c for c in all_cells if c["workload"] == "idle_rss" and c.get("idle_rss_kib")]
    rows = len(workloads) + (1 if idle else 0)
    if rows == 0:
        return
    fig, axes = plt.subplots(rows, 2, figsize=(14, 2.6 * rows + 1), squeeze=False)
    for i, w in enumerate(workloads):
        cells = sorted((c for c in all_cells if c["workload"] == w and c.get("summary")),
                       key=lambda c: c["summary"]["rps"])
        names = [c["server"] for c in cells]
        rps = [c["summary"]["rps"] for c in cells]
        lo = [c["summary"]["rps"] - c["summary"]["rps_min"] for c in cells]
        hi = [c["summary"]["rps_max"] - c["summary"]["rps"] for c in cells]
        colors = ["tab:red" if n == "qiao" else "tab:gray" if n in grey else "tab:blue" for n in names]
        ax = axes[i][0]
        ax.barh(names, rps, xerr=[lo, hi], color=colors)
        ax.set_title(f"{w}: req/s (median, min–max)", fontsize=10)
        ax.tick_params(labelsize=8)
        floor = doc.get("floor", {}).get(_app_of(w))
        if w == "sleep10":  # 32 threads x 100 sleeps/s: the ceiling, not a floor
            ax.axvline(3200, color="green", linestyle="--", linewidth=1, label="ideal (32 x 100/s)")
            ax.legend(fontsize=7, loc="lower right")
        elif floor and floor["calls_per_s"] < 2 * max(rps):
            ax.axvline(floor["calls_per_s"], color="green", linestyle="--", linewidth=1, label="in-process floor")
            ax.legend(fontsize=7, loc="lower right")
        ax = axes[i][1]
        ax.barh(names, [c["summary"]["p99"] or 0 for c in cells], color=colors)
        ax.set_title(f"{w}: p99 latency, ms (lower is better)", fontsize=10)
        ax.tick_params(labelsize=8)
    if idle:
        # Left: RSS of one worker (the target's measure), and of the whole process tree;
        # right: the worker's own memory (USS), what one more worker costs.
        def worker(c):
            return c.get("idle_rss_worker_kib") or c["idle_rss_kib"]

        cells = sorted(idle, key=worker)
        names = [c["server"] for c in cells]
        colors = ["tab:red" if n == "qiao" else "tab:gray" if n in baseline else "tab:blue" for n in names]
        ax = axes[rows - 1][0]
        ax.barh(names, [c["idle_rss_kib"] / 1024 for c in cells], color="lightgray",
                label="process tree")
        ax.barh(names, [worker(c) / 1024 for c in cells], color=colors, label="one worker")
        ax.set_title("idle RSS, MiB (lower is better)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
        ax.tick_params(labelsize=8)
        ax = axes[rows - 1][1]
        if all(c.get("idle_uss_worker_kib") for c in cells):
            ax.barh(names, [c["idle_uss_worker_kib"] / 1024 for c in cells], color=colors)
            ax.set_title("idle USS of one worker, MiB (lower is better)", fontsize=10)
            ax.tick_params(labelsize=8)
        else:
            ax.axis("off")
    fig.suptitle(f"qiao vs peers — {doc['date']} — {doc['machine']['cpu']}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(sys.argv[2], dpi=90)


def _app_of(workload: str) -> str:
    return {"hello_close": "hello", "pipeline16": "hello", "post64k": "post_read"}.get(workload, workload)


if __name__ == "__main__":
    main()

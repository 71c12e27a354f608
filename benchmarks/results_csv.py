"""The one writer of benchmarks/results.csv (long format), shared by every benchmark script."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results.csv"
HEADER = ["benchmark", "configuration", "metric", "value", "unit", "git_sha", "machine", "date"]


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - a benchmark outside a checkout still records its figures
        return "unknown"


def machine() -> str:
    return f"{platform.node()} ({os.cpu_count()} cores)"


def append_rows(rows, path: str | os.PathLike = RESULTS) -> tuple[str, str, str]:
    """Append (benchmark, configuration, metric, value, unit) rows; returns (git sha, machine, date) used."""
    sha, mach, date = git_sha(), machine(), datetime.date.today().isoformat()
    new = not os.path.exists(path)
    with open(path, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(HEADER)
        for bench, conf, metric, value, unit in rows:
            w.writerow([bench, conf, metric, f"{value:.6g}", unit, sha, mach, date])
    return sha, mach, date

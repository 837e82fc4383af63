"""Start a service on a temporary data directory and run the locust users against it, headless.

    python loadtest/run_locust.py --users 60 --spawn-rate 20 --run-time 30s

Writes loadtest/out/locust_stats.csv (and the other locust CSVs) and loadtest/out/locust_report.html.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from loadclient import local_server

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--spawn-rate", type=float, default=20)
    p.add_argument("--run-time", default="30s")
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=HERE / "out")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with local_server(args.window) as (url, key):
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(HERE / "locustfile.py"),
            "--headless",
            "--host",
            url,
            "--users",
            str(args.users),
            "--spawn-rate",
            str(args.spawn_rate),
            "--run-time",
            args.run_time,
            "--csv",
            str(args.out / "locust"),
            "--html",
            str(args.out / "locust_report.html"),
            "--only-summary",
        ]
        print("running:", " ".join(cmd[2:]), file=sys.stderr)
        rc = subprocess.run(cmd, env={**os.environ, "RECEIPT_API_KEY": key}, check=False).returncode
    print(f"CSV: {args.out}/locust_stats.csv  HTML: {args.out}/locust_report.html", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

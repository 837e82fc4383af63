"""Start a service on a temporary data directory and run the locust users against it, headless.

    python loadtest/run_locust.py --users 60 --spawn-rate 20 --run-time 30s
    python loadtest/run_locust.py --instances 3     # a redis-server and three instances on it

Writes loadtest/out/locust_stats.csv (and the other locust CSVs) and loadtest/out/locust_report.html.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from loadclient import local_server
from scale_out import instances, redis_server

HERE = Path(__file__).resolve().parent


@contextmanager
def services(n: int, window: float) -> Iterator[tuple[list[str], str]]:
    """One service on SQLite, or ``n`` instances on a redis-server this starts; (urls, key)."""
    if n == 1:
        with local_server(window) as (url, key):
            yield [url], key
        return
    with tempfile.TemporaryDirectory(prefix="receipt-locust-") as tmp:
        (Path(tmp) / "redis").mkdir()
        with redis_server(Path(tmp) / "redis") as store, instances(Path(tmp), store, n, window) as (urls, key):
            print(f"{n} instances on {store}: {', '.join(urls)}", file=sys.stderr)
            yield urls, key


def _name_every_host(report: Path, first: str, urls: list[str]) -> None:
    """Make the HTML report's target host name every instance the users were spread over."""
    if not report.exists():
        return
    html = report.read_text()
    every = f"{', '.join(urls)} ({len(urls)} instances, users round robin)"
    report.write_text(html.replace(json.dumps({"host": first})[1:-1], json.dumps({"host": every})[1:-1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=60)
    p.add_argument("--spawn-rate", type=float, default=20)
    p.add_argument("--run-time", default="30s")
    p.add_argument("--window", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument("--instances", type=int, default=1, help="more than 1: that many instances on one redis-server")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with services(args.instances, args.window) as (urls, key):
        url = urls[0]
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
        env = {**os.environ, "RECEIPT_API_KEY": key, "RECEIPT_HOSTS": ",".join(urls)}
        rc = subprocess.run(cmd, env=env, check=False).returncode
        if len(urls) > 1:  # locust names its --host; the users spread over every instance
            _name_every_host(args.out / "locust_report.html", url, urls)
    print(f"CSV: {args.out}/locust_stats.csv  HTML: {args.out}/locust_report.html", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

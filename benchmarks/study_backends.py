"""A study on the two backends: `karmic study run` with the local process pool on a directory lake,
then with Ray (a local cluster) on an `s3://` lake (moto's server on loopback), one after the other
in this script, and both reports' metrics.parquet and verdicts compared.

This is the README's "on a Ray cluster with an s3:// lake" command at the scale this machine allows
(one node, --workers cells at once), on `studies/demo.toml` by default. What it shows: the command
path works end to end, what Ray and s3 cost on top of the local run, and that the same seeds give
the same metrics and verdicts whichever backend and lake ran them. Loopback has no network latency,
so the s3 figure is a lower bound for a real object store. With --json the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from lake_s3 import start_server, timed_cli


def _comparable(metrics: Path) -> pl.DataFrame:
    """metrics.parquet without run ids (new uuids per run), in a fixed row order."""
    df = pl.read_parquet(metrics)
    df = df.drop([c for c in df.columns if "run_id" in c])
    return df.sort(df.columns)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="demo", help="study name (studies/NAME.toml) or path")
    p.add_argument("--workers", type=int, default=2, help="cells at once on both backends")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    import s3fs

    server, _ = start_server()
    try:
        s3fs.S3FileSystem().mkdir("bench")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            lakes = {"local": str(tmp / "lake"), "ray_s3": "s3://bench/study"}
            backends = {"local": ["--backend", "local"], "ray_s3": ["--backend", "ray"]}
            rec: dict = {"study": a.study, "workers": a.workers}
            for name, lake in lakes.items():
                rec[f"run_s_{name}"] = timed_cli("study", "run", a.study, *backends[name],
                                                 "--workers", str(a.workers), "--lake", lake)
                rec[f"report_s_{name}"] = timed_cli("study", "report", a.study, "--lake", lake,
                                                    "--out", str(tmp / f"report_{name}"), "--no-episodes")
            m = [_comparable(tmp / f"report_{n}" / "metrics.parquet") for n in lakes]
            v = [json.loads((tmp / f"report_{n}" / "verdicts.json").read_text()) for n in lakes]
            rec["metric_rows"] = m[0].height
            rec["metrics_equal"] = m[0].equals(m[1])
            rec["verdicts_equal"] = json.dumps(v[0].get("predictions"), sort_keys=True) == json.dumps(
                v[1].get("predictions"), sort_keys=True)
    finally:
        server.stop()
    print(f"study {a.study}, {a.workers} workers: run {rec['run_s_local']:.1f} s local (directory lake) "
          f"vs {rec['run_s_ray_s3']:.1f} s ray + s3 ({rec['run_s_ray_s3'] / rec['run_s_local']:.2f}x); "
          f"report {rec['report_s_local']:.1f} vs {rec['report_s_ray_s3']:.1f} s")
    print(f"metrics.parquet ({rec['metric_rows']} rows) equal: {rec['metrics_equal']}; "
          f"verdicts equal: {rec['verdicts_equal']}")
    if a.json:
        print(json.dumps(rec))
    if not (rec["metrics_equal"] and rec["verdicts_equal"]):
        sys.exit(1)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s in all)", file=sys.stderr)

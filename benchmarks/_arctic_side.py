"""The ArcticDB side of bench_cold.py, run in a virtualenv of its own (ArcticDB needs pandas < 3).

Reads the wide TSBS frame from a Parquet file, writes it the way an ArcticDB user would (one
symbol per host, one column per metric, a UTC DatetimeIndex) into a local LMDB library, then
times the four questions over the given hosts and windows. Prints one JSON object: medians in ms
and the row count of each answer for the first parameter set (checked by bench_cold.py).

    python _arctic_side.py WIDE.parquet PARAMS.json REPEAT
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import arcticdb as adb
import pandas as pd
from arcticdb import QueryBuilder, ReadRequest


def main() -> None:
    wide_path, params_path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spec = json.loads(Path(params_path).read_text())
    metrics, t0, t12 = spec["metrics"], pd.Timestamp(spec["t0"]), pd.Timestamp(spec["t12"])
    wide = pd.read_parquet(wide_path)
    wide["time"] = wide["time"].astype("datetime64[ns, UTC]")
    hosts = sorted(wide["hostname"].unique())
    folder = tempfile.mkdtemp(prefix="agts-bench-arctic-")
    lib = adb.Arctic(f"lmdb://{folder}?map_size=8GB").get_library("cpu", create_if_missing=True)
    began = time.perf_counter()
    for host, part in wide.groupby("hostname"):
        lib.write(host, part.set_index("time")[metrics])
    load_sec = time.perf_counter() - began
    metric = metrics[0]

    def a(p: dict) -> pd.DataFrame:
        start = pd.Timestamp(p["start"])
        return lib.read(p["host"], date_range=(start, start + pd.Timedelta(hours=1)),
                        columns=[metric]).data

    def b(p: dict) -> pd.DataFrame:
        return lib.read(p["host"], date_range=(t0, t12)).data

    def c(p: dict) -> pd.DataFrame:
        query = QueryBuilder().resample("1h").agg({metric: "mean"})
        # (ArcticDB cannot combine a column selection with a query's clauses: the
        # aggregation names the column.)
        out = lib.read_batch([ReadRequest(h, date_range=(t0, t12), query_builder=query)
                              for h in hosts])
        return pd.concat([r.data for r in out], keys=hosts)

    def d(p: dict) -> pd.DataFrame:
        out = lib.read_batch([ReadRequest(h, columns=[metric]) for h in hosts])
        return pd.concat([r.data for r in out], keys=hosts)

    result: dict[str, object] = {"load_sec": load_sec}
    for name, call in (("a", a), ("b", b), ("c", c), ("d", d)):
        result[f"{name}_rows"] = len(call(spec["params"][0]))
        times = []
        for i in range(repeat + 1):
            p = spec["params"][i % len(spec["params"])]
            began = time.perf_counter()
            call(p)
            times.append((time.perf_counter() - began) * 1000)
        result[name] = statistics.median(times[1:])
    print(json.dumps(result))


if __name__ == "__main__":
    main()

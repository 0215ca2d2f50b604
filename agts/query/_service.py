"""The query API behind :class:`agts.StorageEngine`: checks, routing, cache and statistics."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from agts._args import Tiers, check_choice, check_positive_int, check_range, check_tiers, to_utc
from agts.archive import ColdTier
from agts.config import QueryConfig
from agts.db._database import Database
from agts.db._replicas import try_elsewhere
from agts.errors import ResultTooLargeError, StorageError, ValidationError
from agts.query import _aggregate as agg
from agts.query import _discovery
from agts.query._args import (
    AggSpec,
    GapFill,
    Shape,
    bucket_micros,
    check_labels,
    check_labels_in,
    check_metric_name,
    format_cursor,
    parse_aggregations,
    parse_bucket,
    parse_cursor,
)
from agts.query._cache import QueryCache, QueryStats
from agts.query._latest import latest_points
from agts.query._raw import empty_raw, fetch_page, iter_pages, with_series
from agts.query._rollups import (
    RollupView,
    choose,
    read_view,
    refresh,
    status,
    view_of,
    view_query,
)
from agts.query._series import SeriesResolver, points_estimate
from agts.query._tiers import aggregate_points, bucket_floor, cold_points, once

__all__ = ["AggregatedArgs", "MetricsQueries", "check_aggregated", "next_cursor"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 100_000


def next_cursor(page: pl.DataFrame) -> str | None:
    """The ``after=`` cursor that continues after the last row of ``page`` (None when empty)."""
    if page.is_empty():
        return None
    if "series_id" not in page.columns or "timestamp" not in page.columns:
        raise ValidationError("next_cursor needs a page from query_metrics (timestamp, series_id)")
    last = page.row(page.height - 1, named=True)
    return format_cursor(last["timestamp"], last["series_id"])


def _key_part(mapping: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in mapping.items()))


@dataclass(frozen=True)
class AggregatedArgs:
    """The arguments of an aggregated query, checked and normalized."""

    name: str
    start: datetime
    end: datetime
    width: timedelta
    specs: tuple[AggSpec, ...]
    labels: dict[str, str]
    labels_in: dict[str, list[str]]
    keys: list[str]
    fill: str | None


def check_aggregated(
    metric_name: Any, start: Any, end: Any, bucket: Any, aggregation: Any, labels: Any = None, *,
    labels_in: Any = None, group_by: Any = None, fill: Any = None, max_results: int,
) -> AggregatedArgs:
    """Check every argument of an aggregated query at the door (also for the hot ∪ cold path)."""
    name = check_metric_name(metric_name)
    start_utc, end_utc = check_range(start, end)
    width = parse_bucket(bucket)
    specs = parse_aggregations(aggregation)
    label_map, in_map = check_labels(labels), check_labels_in(labels_in)
    keys = MetricsQueries._check_group_by(group_by, specs)
    check_choice(fill, GapFill, name="fill", optional=True)
    buckets = (end_utc - start_utc) // width + 1 if end_utc > start_utc else 0
    if fill is not None and buckets > max_results:
        # Checked before any grid is built: a fine bucket over a long range would not fit in memory.
        raise _too_large(max_results, f"{buckets} buckets with fill={fill!r}",
                         "use a coarser bucket or a shorter range")
    return AggregatedArgs(name, start_utc, end_utc, width, specs, label_map, in_map, keys, fill)


def _too_large(max_results: int, returned: str | None, advice: str) -> ResultTooLargeError:
    """The one message for a result past ``query.max_results`` (``returned``: how many, when
    known, e.g. ``"1234 rows"``)."""
    what = f"{returned}, more than {max_results}" if returned else f"more than {max_results} rows"
    return ResultTooLargeError(
        f"the query returns {what} (query.max_results); {advice}, or raise query.max_results")


_RAW_ADVICE = ("page with limit= and after=agts.next_cursor(page), stream with iter_batches=True "
               "(hot tier), narrow the time range or labels")
_AGG_ADVICE = "use a coarser bucket, a shorter range or fewer groups"


class MetricsQueries:
    """Metric queries of one database, on the hot tier, the cold tier or both (``tiers=``): owns
    the result cache and the statistics.

    Parameters
    ----------
    db
        The database.
    config
        The ``query`` section.
    community
        Whether the server runs the Community edition (continuous aggregates as rollups).
    cold
        The cold tier read by ``tiers="cold"`` and ``"all"`` (None: it is empty).
    """

    def __init__(self, db: Database, config: QueryConfig, *, community: bool,
                 cold: ColdTier | None = None) -> None:
        self._db = db
        self._config = config
        self._community = community
        self._cold = cold
        self._series = SeriesResolver(db)
        self.cache = QueryCache(db, ttl_sec=config.cache_ttl_sec,
                                max_entries=config.cache_max_entries)
        self.stats = QueryStats()

    # -- raw -----------------------------------------------------------------------------------

    def raw(
        self, metric_name: str, start: Any, end: Any, labels: Any = None, *,
        labels_in: Any = None, limit: int | None = None, after: str | None = None,
        iter_batches: bool = False, batch_size: int = DEFAULT_BATCH_SIZE, tiers: Tiers = "hot",
    ) -> pl.DataFrame | Iterator[pl.DataFrame]:
        name = check_metric_name(metric_name)
        return self._raw([name], start, end, labels, labels_in=labels_in, limit=limit,
                         after=after, iter_batches=iter_batches, batch_size=batch_size,
                         kind="raw", tiers=tiers)

    def _raw(
        self, names: list[str], start: Any, end: Any, labels: Any, *, labels_in: Any,
        limit: int | None, after: str | None, iter_batches: bool, batch_size: int, kind: str,
        tiers: Tiers,
    ) -> pl.DataFrame | Iterator[pl.DataFrame]:
        began = time.perf_counter()
        check_tiers(tiers)
        start_utc, end_utc = check_range(start, end)
        label_map, in_map = check_labels(labels), check_labels_in(labels_in)
        max_results = self._config.max_results
        if limit is not None:
            check_positive_int(limit, name="limit", maximum=max_results)
        cursor = parse_cursor(after)
        if iter_batches:
            check_positive_int(batch_size, name="batch_size")
            if limit is not None:
                raise ValidationError("pass either limit= (one page) or iter_batches=True, not both")
            if tiers != "hot":
                raise ValidationError(
                    f"iter_batches=True reads the hot tier only, got tiers={tiers!r}; page with "
                    "limit= and after= (supported with every tiers value), or pass tiers='hot'")
            series = self._series.resolve(names, label_map, in_map)
            return self._stream(series, start_utc, end_utc, batch_size, cursor, began)
        key = (kind, tiers, tuple(names), start_utc, end_utc, _key_part(label_map),
               _key_part(in_map), limit, cursor)
        return self._cached(kind, key, names, start_utc, end_utc, began, lambda: self._raw_frame(
            names, start_utc, end_utc, label_map, in_map, limit, cursor, tiers))

    def _raw_frame(
        self, names: list[str], start: datetime, end: datetime, labels: dict[str, str],
        labels_in: dict[str, list[str]], limit: int | None, cursor: tuple[datetime, int] | None,
        tiers: Tiers,
    ) -> pl.DataFrame:
        # How many points the range holds, roughly, travels with the series check: a small
        # result is read over psycopg (agts.db._small).
        def estimate_of(cached: pl.DataFrame) -> tuple[str, Any]:
            return points_estimate(cached.get_column("series_id").to_list(), start, end)

        series, estimate = self._series.resolve_with(
            names, labels, labels_in,
            also=estimate_of if tiers != "cold" and start < end else None)
        if series.is_empty() or start >= end:
            return empty_raw(series)
        max_results = self._config.max_results
        cap = limit if limit is not None else max_results + 1
        ids = series.get_column("series_id").to_list()
        parts = []
        if tiers != "hot":
            cold = cold_points(self._cold, series, start, end)
            if cursor is not None:
                cold = cold.filter((pl.col("timestamp") > cursor[0]) | (
                    (pl.col("timestamp") == cursor[0]) & (pl.col("series_id") > cursor[1])))
            parts.append(cold)
        if tiers != "cold":
            hint = None if estimate is None or estimate[0] is None else int(estimate[0]) + 1
            if limit is not None:
                hint = limit if hint is None else min(hint, limit)
            parts.append(fetch_page(self._db, ids, start, end, limit=cap, after=cursor,
                                    server_order=limit is not None, rows_hint=hint))
        if tiers == "hot":
            points = parts[0]
        elif len(parts) == 1 or parts[1].is_empty():
            points = parts[0].head(cap)  # the cold rows come in (timestamp, series_id) order
        else:
            points = once(parts[0], parts[1]).sort("timestamp", "series_id").head(cap)
        if limit is None and points.height > max_results:
            raise _too_large(max_results, None, _RAW_ADVICE)
        return with_series(points, series)

    def _stream(
        self, series: pl.DataFrame, start: datetime, end: datetime, batch_size: int,
        cursor: tuple[datetime, int] | None, began: float,
    ) -> Iterator[pl.DataFrame]:
        rows = 0
        try:
            if series.is_empty() or start >= end:
                return
            ids = series.get_column("series_id").to_list()
            # One server for the stream; if a replica fails it midway, the primary goes on
            # after the last row handed out (keyset order: nothing twice, nothing skipped).
            target = self._db.read_target()
            while True:
                try:
                    for page in iter_pages(target, ids, start, end, batch_size=batch_size,
                                           after=cursor):
                        rows += page.height
                        cursor = (page.get_column("timestamp")[-1],
                                  int(page.get_column("series_id")[-1]))
                        yield with_series(page, series)
                    return
                except StorageError as exc:
                    if target is self._db or not try_elsewhere(exc):
                        raise
                    log.warning("a replica failed a stream (%s); the primary goes on", exc)
                    self._db.replica_failed(target, exc)
                    target = self._db
        finally:
            self.stats.record("stream", seconds=time.perf_counter() - began, rows=rows, cache=None)

    # -- aggregated ----------------------------------------------------------------------------

    def aggregated(
        self, metric_name: str, start: Any, end: Any, bucket: Any, aggregation: Any,
        labels: Any = None, *, labels_in: Any = None, group_by: Sequence[str] | None = None,
        fill: GapFill | None = None, kind: str = "aggregated", tiers: Tiers = "hot",
    ) -> pl.DataFrame:
        began = time.perf_counter()
        check_tiers(tiers)
        a = check_aggregated(metric_name, start, end, bucket, aggregation, labels,
                             labels_in=labels_in, group_by=group_by, fill=fill,
                             max_results=self._config.max_results)
        key = (kind, tiers, a.name, a.start, a.end, bucket_micros(a.width), a.specs,
               _key_part(a.labels), _key_part(a.labels_in), tuple(a.keys), a.fill)
        return self._cached(kind, key, [a.name], a.start, a.end, began, lambda: self._aggregate(
            [a.name], a.start, a.end, a.width, a.specs, a.labels, a.labels_in, a.keys, a.fill,
            tiers))

    @staticmethod
    def _check_group_by(group_by: Any, specs: tuple[AggSpec, ...], *,
                        taken: tuple[str, ...] = ()) -> list[str]:
        if group_by is None:
            return []
        keys = [group_by] if isinstance(group_by, str) else group_by
        if not isinstance(keys, Sequence) or not all(isinstance(k, str) and k for k in keys):
            raise ValidationError(f"group_by must be a list of label keys, got {group_by!r}")
        taken = ("timestamp", *taken, *(spec.name for spec in specs))
        for k in keys:
            if k in taken:
                raise ValidationError(
                    f"group_by key {k!r} clashes with an output column ({sorted(taken)!r})")
        if len(set(keys)) != len(keys):
            raise ValidationError(f"group_by lists a key twice: {list(keys)!r}")
        return list(keys)

    def _aggregate(
        self, names: list[str], start: datetime, end: datetime, width: timedelta,
        specs: tuple[AggSpec, ...], labels: dict[str, str], labels_in: dict[str, list[str]],
        keys: list[str], fill: str | None, tiers: Tiers = "hot", *, by_metric: bool = False,
    ) -> pl.DataFrame:
        """One statement for every series of ``names``: per bucket and group (the values of the
        label ``keys``, with ``by_metric`` the metric name first)."""
        groups = Groups(keys, by_metric)
        schema = agg.result_schema(specs, groups.columns)
        # The rollup's state travels with the series check: one round trip for both.
        rollup = choose(specs, width, start, end) if tiers == "hot" and start < end else None
        series, row = self._series.resolve_with(
            names, labels, labels_in, also=view_query(rollup, start, end) if rollup else None)
        if series.is_empty() or start >= end:
            frame = pl.DataFrame(schema=schema)
        elif tiers == "hot":
            view = view_of(rollup, row) if rollup is not None else None
            frame = self._aggregate_sql(series, start, end, width, specs, groups, schema,
                                        view=view)
        else:
            frame = self._aggregate_tiers(series, start, end, width, specs, groups, schema, tiers)
        if fill is not None:
            frame = agg.gap_fill(frame, start=start, end=end, bucket=width,
                                 group_by=groups.columns, fill=fill)
        if frame.height > self._config.max_results:
            raise _too_large(self._config.max_results, f"{frame.height} rows", _AGG_ADVICE)
        return frame

    def _aggregate_tiers(
        self, series: pl.DataFrame, start: datetime, end: datetime, width: timedelta,
        specs: tuple[AggSpec, ...], groups: Groups, schema: dict[str, pl.DataType],
        tiers: Tiers,
    ) -> pl.DataFrame:
        """The buckets from the first to the last cold row are aggregated in Polars from the raw
        rows of both tiers; the buckets before and after that span go through the hot query
        (rollups included). With no cold row in the range it is the hot query unchanged."""
        cold = cold_points(self._cold, series, start, end, ordered=False)
        if cold.is_empty() and tiers == "all":
            return self._aggregate_sql(series, start, end, width, specs, groups, schema)
        if cold.is_empty() or tiers == "cold":
            return aggregate_points(cold, groups.frame(series), width, specs, groups.columns)
        low = max(start, bucket_floor(cold.get_column("timestamp").min(), width))  # type: ignore[arg-type]
        high = min(end, bucket_floor(cold.get_column("timestamp").max(), width) + width)  # type: ignore[arg-type]
        ids = series.get_column("series_id").to_list()
        middle = once(cold, fetch_page(self._db, ids, low, high, limit=None, after=None,
                                       server_order=False))
        parts = [self._aggregate_sql(series, lo, hi, width, specs, groups, schema)
                 for lo, hi in ((start, low), (high, end)) if lo < hi]
        parts.append(aggregate_points(middle, groups.frame(series), width, specs, groups.columns))
        return pl.concat(parts).sort(["timestamp", *groups.columns], nulls_last=True)

    def _aggregate_sql(
        self, series: pl.DataFrame, start: datetime, end: datetime, width: timedelta,
        specs: tuple[AggSpec, ...], groups: Groups, schema: dict[str, pl.DataType],
        *, view: RollupView | None = None,
    ) -> pl.DataFrame:
        ids = series.get_column("series_id").to_list()
        gids, lookup = groups.numbered(series) if groups.columns else (None, None)
        if view is None:
            rollup = choose(specs, width, start, end)
            view = read_view(self._db, rollup, start, end) if rollup is not None else None
        on_rollup = view is not None and view.watermark is not None and start < view.watermark
        parts = ((end - start) // view.rollup.width + 2) * len(ids) if view and on_rollup else 0
        if parts >= _COMBINE_IN_POLARS and agg.combines_in_polars(specs):
            # Many rollup rows: the server sends them and Polars combines them (faster than a
            # server-side hash aggregate of many small groups).
            assert view is not None and view.watermark is not None
            query, params = agg.rollup_parts_sql(
                view.rollup.table, specs, ids=ids, start=start, end=end, bucket=width,
                width=view.rollup.width, watermark=view.watermark, dirty=view.dirty)
            rows = pl.from_arrow(self._db.read_arrow(
                query, params, action="query aggregated metrics", rows_hint=parts))
            assert isinstance(rows, pl.DataFrame)
            frame = agg.combine_parts(rows, specs, width, None if gids is None else pl.DataFrame(
                {"series_id": ids, "g": gids}, schema={"series_id": pl.Int32, "g": pl.Int32}))
        else:
            if view is not None and view.watermark is not None and on_rollup:
                query, params = agg.rollup_sql(
                    view.rollup.table, specs, gids, ids=ids, start=start, end=end, bucket=width,
                    width=view.rollup.width, watermark=view.watermark, dirty=view.dirty)
                log.debug("aggregate from %s (watermark %s, dirty %s)", view.rollup.name,
                          view.watermark, view.dirty)
            else:
                query = agg.raw_sql(specs, gids is not None)
                fractions = [spec.fraction for spec in specs if spec.fraction is not None]
                params = [ids, start, end, width, agg.ORIGIN, *([gids] if gids else []),
                          *fractions]
            # At most one row per bucket and group (a group per series at most): a small result
            # is read over psycopg (agts.db._small), which is faster below a few thousand rows.
            buckets = (end - start) // width + 2
            read = pl.from_arrow(self._db.read_arrow(
                query, params, action="query aggregated metrics",
                rows_hint=buckets * (len(ids) if groups.columns else 1)))
            assert isinstance(read, pl.DataFrame)
            frame = read
        if lookup is not None:  # group numbers back to values (numbered in value order)
            frame = frame.with_columns(pl.col("g").cast(pl.Int32)).join(
                lookup, on="g", how="left", maintain_order="left")
        return frame.select([pl.col(c).cast(t) for c, t in schema.items()])

    # -- latest values -------------------------------------------------------------------------

    def latest(self, metric_names: str | Sequence[str], labels: Any = None, *,
               labels_in: Any = None, before: Any = None) -> pl.DataFrame:
        began = time.perf_counter()
        names = _metric_names(metric_names)
        label_map, in_map = check_labels(labels), check_labels_in(labels_in)
        at = None if before is None else to_utc(before, name="before")
        def compute() -> pl.DataFrame:
            series = self._series.resolve(names, label_map, in_map)
            return with_series(latest_points(self._db, self._cold, series, at), series)

        frame = self._db.read(compute)
        self.stats.record("latest", seconds=time.perf_counter() - began, rows=frame.height,
                          cache=None)
        return frame

    # -- discovery -----------------------------------------------------------------------------

    def metric_names(self) -> pl.DataFrame:
        return self._timed("discovery", lambda: _discovery.metric_names(self._db))

    def series(self, metric_names: str | Sequence[str], labels: Any = None, *,
               labels_in: Any = None) -> pl.DataFrame:
        names = _metric_names(metric_names)
        label_map, in_map = check_labels(labels), check_labels_in(labels_in)
        return self._timed("discovery", lambda: _discovery.series_of(
            self._db, self._series, names, label_map, in_map))

    def label_keys(self, metric_names: str | Sequence[str] | None = None) -> pl.DataFrame:
        names = None if metric_names is None else _metric_names(metric_names)
        return self._timed("discovery", lambda: _discovery.label_keys(self._db, names))

    def label_values(self, key: str, metric_names: str | Sequence[str] | None = None,
                     labels: Any = None, *, labels_in: Any = None) -> pl.DataFrame:
        check_metric_name(key, what="key")
        names = None if metric_names is None else _metric_names(metric_names)
        label_map, in_map = check_labels(labels), check_labels_in(labels_in)
        return self._timed("discovery", lambda: _discovery.label_values(
            self._db, key, names, label_map, in_map))

    def _timed(self, kind: str, compute: Any) -> pl.DataFrame:
        began = time.perf_counter()
        frame: pl.DataFrame = self._db.read(compute)
        self.stats.record(kind, seconds=time.perf_counter() - began, rows=frame.height,
                          cache=None)
        return frame

    # -- several metrics -----------------------------------------------------------------------

    def multi(
        self, metric_names: Sequence[str], start: Any, end: Any, labels: Any = None, *,
        labels_in: Any = None, shape: Shape = "long", bucket: Any = None,
        aggregation: Any = "avg", group_by: Sequence[str] | None = None,
        fill: GapFill | None = None, tiers: Tiers = "hot",
    ) -> pl.DataFrame:
        began = time.perf_counter()
        if isinstance(metric_names, str):
            raise ValidationError(
                f"metric_names must be a non-empty list of names, got {metric_names!r}")
        names = _metric_names(metric_names)
        check_choice(shape, Shape, name="shape")
        check_tiers(tiers)
        if bucket is None:
            if fill is not None or group_by is not None:
                raise ValidationError("fill= and group_by= need bucket= (they work on buckets)")
            frame = self._raw(names, start, end, labels, labels_in=labels_in, limit=None,
                              after=None, iter_batches=False, batch_size=DEFAULT_BATCH_SIZE,
                              kind="multi", tiers=tiers)
            assert isinstance(frame, pl.DataFrame)
            return frame if shape == "long" else _wide_raw(frame, names)
        a = check_aggregated(names[0], start, end, bucket, aggregation, labels,
                             labels_in=labels_in, group_by=None, fill=fill,
                             max_results=self._config.max_results)
        keys = self._check_group_by(group_by, a.specs, taken=("metric_name",))
        key = ("multi", tiers, shape, tuple(names), a.start, a.end, bucket_micros(a.width),
               a.specs, _key_part(a.labels), _key_part(a.labels_in), tuple(keys), a.fill)
        long = self._cached("multi", key, names, a.start, a.end, began, lambda: self._aggregate(
            names, a.start, a.end, a.width, a.specs, a.labels, a.labels_in, keys, a.fill, tiers,
            by_metric=True))
        if shape == "wide":  # sorted once pivoted: a tenth of the rows with ten metrics
            return _wide_aggregated(long, names, keys, [s.name for s in a.specs]).sort(
                ["timestamp", *keys], nulls_last=True)
        order = pl.col("metric_name").replace_strict(names, list(range(len(names))),
                                                     return_dtype=pl.Int32)
        return long.sort([pl.col("timestamp"), *(pl.col(k) for k in keys), order],
                         nulls_last=True).select("timestamp", "metric_name", *keys,
                                                 *(s.name for s in a.specs))

    # -- cache, statistics, rollups -------------------------------------------------------------

    def _cached(self, kind: str, key: Any, names: list[str], start: datetime, end: datetime,
                began: float, compute: Any) -> pl.DataFrame:
        cacheable = self.cache.cacheable(end)
        action = f"query metric {', '.join(map(repr, names[:3]))}{', ...' if len(names) > 3 else ''}"
        if cacheable:
            hit = self.cache.get(key, action=action)
            if hit is not None:
                self.stats.record(kind, seconds=time.perf_counter() - began, rows=hit.height,
                                  cache=True)
                return hit
        marker = self.cache.mark(start, end, action=action) if cacheable else None
        # A frame to cache is read on a replica only if it has replayed the primary's WAL as of
        # the mark: then it holds every batch the marker counted, and a later batch changes the
        # count (a hit is always checked on the primary).
        after = self._db.primary_position() if marker is not None else None
        frame: pl.DataFrame = self._db.read(compute, after=after)
        if marker is not None:
            self.cache.put(key, frame, start, end, marker)
        self.stats.record(kind, seconds=time.perf_counter() - began, rows=frame.height,
                          cache=False if cacheable else None)
        return frame

    def refresh_rollups(self) -> dict[str, int]:
        began = time.perf_counter()
        done = refresh(self._db, community=self._community)
        self.stats.record("refresh_rollups", seconds=time.perf_counter() - began, rows=0,
                          cache=None)
        return done

    def rollup_status(self) -> pl.DataFrame:
        return status(self._db, community=self._community)


#: From how many rollup rows on an answer combines them in Polars rather than in SQL.
_COMBINE_IN_POLARS = 2_000


@dataclass(frozen=True)
class Groups:
    """What an aggregated query groups by within a bucket: the values of label ``keys`` (null for
    a series without the key) and, with ``by_metric``, first the metric name (several metrics in
    one statement)."""

    keys: list[str]
    by_metric: bool = False

    @property
    def columns(self) -> list[str]:
        return ["metric_name", *self.keys] if self.by_metric else list(self.keys)

    def values(self, series: pl.DataFrame) -> list[list[str | None]]:
        """One list per group column: each series' value."""
        return list(_group_values(tuple(series.get_column("metric_name").to_list()),
                                  tuple(series.get_column("labels_json").to_list()),
                                  tuple(self.keys), self.by_metric))

    def numbered(self, series: pl.DataFrame) -> tuple[list[int], pl.DataFrame]:
        """Each series' group number, and the groups (``g`` and the group columns) numbered in
        the order of their values (nulls last), for the SQL's ``GROUP BY`` on integers."""
        return _numbered(tuple(series.get_column("metric_name").to_list()),
                         tuple(series.get_column("labels_json").to_list()),
                         tuple(self.keys), self.by_metric)

    def frame(self, series: pl.DataFrame) -> pl.DataFrame:
        """``series_id`` and the group columns, one row per series (the Polars path's)."""
        return pl.DataFrame(
            {"series_id": series.get_column("series_id"),
             **dict(zip(self.columns, self.values(series), strict=True))},
            schema={"series_id": pl.Int32, **dict.fromkeys(self.columns, pl.String)})


@functools.lru_cache(maxsize=256)
def _group_values(names: tuple[str, ...], texts: tuple[str, ...], keys: tuple[str, ...],
                  by_metric: bool) -> tuple[list[str | None], ...]:
    # Series never change, so a set of them is decoded once (1,000 label sets: ~4 ms).
    label_sets = [json.loads(text) for text in texts]
    out = [[labels.get(k) for labels in label_sets] for k in keys]
    return (list(names), *out) if by_metric else tuple(out)


@functools.lru_cache(maxsize=256)
def _numbered(names: tuple[str, ...], texts: tuple[str, ...], keys: tuple[str, ...],
              by_metric: bool) -> tuple[list[int], pl.DataFrame]:
    columns = ["metric_name", *keys] if by_metric else list(keys)
    values = _group_values(names, texts, keys, by_metric)
    frame = pl.DataFrame(dict(zip(columns, values, strict=True)),
                         schema=dict.fromkeys(columns, pl.String))
    lookup = frame.unique().sort(columns, nulls_last=True).with_row_index("g").with_columns(
        pl.col("g").cast(pl.Int32))
    gids = frame.join(lookup, on=columns, how="left", nulls_equal=True,
                      maintain_order="left").get_column("g").to_list()
    return gids, lookup


def _metric_names(metric_names: Any) -> list[str]:
    """One name or a non-empty list of distinct names."""
    if isinstance(metric_names, str):
        return [check_metric_name(metric_names)]
    if not isinstance(metric_names, Sequence) or not metric_names:
        raise ValidationError(
            f"metric_names must be a non-empty list of names, got {metric_names!r}")
    names = [check_metric_name(n, what="metric_names item") for n in metric_names]
    if len(set(names)) != len(names):
        raise ValidationError(f"metric_names lists a name twice: {names!r}")
    return names


def _wide_raw(frame: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    counts = frame.group_by("metric_name").agg(pl.col("series_id").n_unique().alias("n"))
    several = counts.filter(pl.col("n") > 1).get_column("metric_name").to_list()
    if several:
        raise ValidationError(
            f"shape='wide' needs one series per metric, but {sorted(several)!r} match several "
            "label sets; narrow labels=, or pass bucket= and aggregation= to combine them")
    if frame.is_empty():
        return pl.DataFrame(schema={"timestamp": pl.Datetime("us", "UTC"),
                                    **dict.fromkeys(names, pl.Float64)})
    # One pivot (a column per metric, aligned on time: one row per timestamp of any metric).
    wide = frame.pivot(on="metric_name", index="timestamp", values="value", on_columns=names,
                       maintain_order=True)
    return wide.sort("timestamp").select("timestamp", *(pl.col(n).cast(pl.Float64)
                                                       for n in names))


def _wide_aggregated(long: pl.DataFrame, names: list[str], keys: list[str],
                     aggs: list[str]) -> pl.DataFrame:
    """One row per bucket (and group), one column per metric: named after the metric for one
    aggregation, ``<metric>_<aggregation>`` for several; null where a metric has no value."""
    index = ["timestamp", *keys]
    columns = {(n, agg_): n if len(aggs) == 1 else f"{n}_{agg_}" for n in names for agg_ in aggs}
    clash = sorted(set(columns.values()) & set(index))
    if clash:
        raise ValidationError(f"shape='wide' would name a metric column like a key column: "
                              f"{clash!r}; use shape='long'")
    schema = long.schema
    if len(aggs) == 1:
        wide = long.pivot(on="metric_name", index=index, values=aggs[0], on_columns=names,
                          maintain_order=True)
        return wide.select(*index, *(pl.col(n).cast(schema[aggs[0]]) for n in names))
    wide = long.select(index).unique(maintain_order=True)
    for a in aggs:  # one pivot per aggregation (a metric per column), joined on the index
        part = long.pivot(on="metric_name", index=index, values=a, on_columns=names,
                          maintain_order=True)
        part = part.rename({n: columns[(n, a)] for n in names})
        wide = wide.join(part, on=index, how="left", nulls_equal=True, maintain_order="left")
    return wide.select(*index, *(pl.col(columns[(n, a)]).cast(schema[a]) for n in names
                                 for a in aggs))

"""The values the metrics ingest API takes and returns, and its limits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

__all__ = [
    "MAX_LABELS",
    "MAX_LABELS_BYTES",
    "MAX_NAME_LENGTH",
    "IngestResult",
    "MetricPoint",
    "OnError",
]

OnError = Literal["raise", "skip"]

#: At most this many labels per point (a series' label set).
MAX_LABELS = 32
#: At most this many bytes in a label set's canonical JSON text.
MAX_LABELS_BYTES = 4096
#: At most this many characters in a metric name.
MAX_NAME_LENGTH = 256


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One metric point, as in the seed: ``(timestamp, metric_name, value, labels)``.

    Parameters
    ----------
    timestamp
        When the value was measured. Timezone-aware; a naive datetime is taken to be UTC.
        Stored to the microsecond.
    metric_name
        For example ``"order_latency_ms"``; non-empty.
    value
        A finite number (NaN and infinities are refused).
    labels
        String keys and values, for example ``{"venue": "binance", "market": "BTC-USDT"}``.
        A metric name with one label set is one *series*.
    """

    timestamp: dt.datetime
    metric_name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestResult:
    """What a call to ``insert_metrics_batch`` did.

    Attributes
    ----------
    rows_written : int
        Points stored by this call.
    duplicates : int
        Points not stored because the same (series, timestamp) was already stored, or came earlier
        in the same batch. A resent batch counts all its points here.
    skipped : polars.DataFrame
        With ``on_error="skip"``: the input rows refused by validation, with their ``row`` index in
        the input and the ``error``. Empty otherwise.
    batch_id : str or None
        The ledger id the batch was stored under (None when nothing was valid).
    already_ingested : bool
        True when the batch id was found in the ledger: the batch had been stored before.
    new_series : int
        Series registered by this call.
    """

    rows_written: int
    duplicates: int
    skipped: pl.DataFrame
    batch_id: str | None
    already_ingested: bool = False
    new_series: int = 0

    @property
    def rows_skipped(self) -> int:
        """Number of input rows refused by validation."""
        return self.skipped.height

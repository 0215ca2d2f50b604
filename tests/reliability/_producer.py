"""A producer process for the crash tests: ``python -m tests.reliability._producer``.

Connects with ``$AGTS_DSN`` (never a password on the command line), puts points ``first ..`` in
batches through an ingestor on ``--spool``, and after every ``flush()`` prints ``acked N``: every
point below N is stored or spooled, so it must survive a SIGKILL. With ``--stop`` it closes the
ingestor cleanly after that many points and prints ``closed``.
"""

from __future__ import annotations

import argparse
import sys

import agts
from tests.reliability._data import seq_points


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spool", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--stop", type=int, default=None)
    parser.add_argument("--producer", default="p0")
    args = parser.parse_args()
    with agts.connect() as engine:
        ing = engine.ingestor(batch_size=args.batch, flush_interval_ms=10, spool_dir=args.spool,
                              max_buffer_size=max(10_000, args.batch))
        print("ready", flush=True)
        i = args.first
        while args.stop is None or i < args.first + args.stop:
            ing.put(seq_points(i, i + args.batch, producer=args.producer))
            i += args.batch
            ing.flush(timeout=120)
            print(f"acked {i}", flush=True)
        ing.close(timeout=120)
        print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reads the `switchboard bench --json` reports the side-by-side scripts leave in a directory
(NAME.WORKLOAD.REP.json) and gives medians over the repetitions, for their markdown tables.
bench/mqtt.sh and bench/transports.sh import it."""
import json
import os
import statistics


def medians(out, reps):
    """`med(name, workload, field)`: the median of `field(report)` over the repetitions,
    skipping runs that failed or lack it; 0 when none has it."""

    def med(name, workload, field):
        vals = []
        for r in range(1, reps + 1):
            try:
                with open(os.path.join(out, f"{name}.{workload}.{r}.json")) as f:
                    v = field(json.load(f))
            except Exception:
                v = None
            if v is not None:
                vals.append(v)
        return statistics.median(vals) if vals else 0

    return med


def ratio(v, base):
    """` (1.23×)` against `base`, or nothing when either is missing."""
    return f" ({v / base:.2f}×)" if v and base else ""

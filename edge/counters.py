"""What the agent counts while it runs: read by the demo, the benchmarks and the tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    scored: int = 0
    scored_without_model: int = 0
    alarms: int = 0
    events: int = 0
    events_suppressed: int = 0
    uploaded_rows_without_model: int = 0
    uploaded_rows_with_model: int = 0
    batches_queued: int = 0
    scoring_errors: int = 0
    # Samples whose handling failed outside the model (the upload queue, say).
    sample_errors: int = 0

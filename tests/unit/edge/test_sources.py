"""Data sources skip a bad line and go on; a source with nothing to give says so."""

from __future__ import annotations

import io
import itertools
import threading
from pathlib import Path

from edge.errors import SourceGone
from edge.sources import SkippedLines, csv_replay, json_lines


def test_an_infinite_or_overflowing_csv_value_is_one_skipped_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b,label\n1,2,inf\n1e400,2,1\n3,4,1\n")
    skipped = SkippedLines()
    samples = list(csv_replay(path, 2, "label", loop=False, skipped=skipped))
    assert [s.label for s in samples] == [1]
    assert skipped.count == 2


def test_a_csv_with_no_readable_row_is_a_source_gone_not_a_spin(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("a,b\nx,y\n")
    outcome: list[BaseException | list[object]] = []

    def replay() -> None:
        try:
            outcome.append(list(itertools.islice(csv_replay(path, 2, "label", loop=True), 1)))
        except BaseException as exc:  # reported below, in the test's own thread
            outcome.append(exc)

    # In a thread, so that the spin this guards against fails the test instead of hanging it.
    worker = threading.Thread(target=replay, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the replay spins on a file with no readable row"
    [result] = outcome
    assert isinstance(result, SourceGone)
    assert "no readable row" in str(result)


def test_a_stdin_label_that_overflows_is_one_skipped_line() -> None:
    stream = io.StringIO('{"x": [1, 2], "y": 1e400}\n{"x": [1e400, 2]}\n{"x": [3, 4], "y": 2}\n')
    skipped = SkippedLines()
    samples = list(json_lines(2, stream, skipped))
    assert [s.label for s in samples] == [2]
    assert skipped.count == 2

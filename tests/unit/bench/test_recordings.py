"""The .ts reader and the pinned wheel the real recordings come from."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench.recordings import Pin, RecordingError, parse_ts, read_from_wheel, read_pin

SAMPLE = """#A comment, as the archive's files open with.
@problemName Tiny
@timeStamps false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true Still Moving
@data
0.1,0.2,0.3:1,2,3:Still
-1.5,0,2.5e1:4,5,6:Moving
"""


def test_a_case_is_its_dimensions_as_columns_and_its_label() -> None:
    recording = parse_ts(SAMPLE)
    assert recording.name == "Tiny"
    assert recording.labels == ("Still", "Moving")
    assert recording.dimensions == 2
    assert [c.label for c in recording.cases] == ["Still", "Moving"]
    np.testing.assert_array_equal(recording.cases[0].samples, [[0.1, 1], [0.2, 2], [0.3, 3]])
    assert recording.cases[1].samples[2, 0] == 25.0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("0.1,0.2,0.3:Still", "1 dimensions, the header says 2"),
        ("0.1,0.2:1,2,3:Still", "differ in length"),
        ("0.1,x,0.3:1,2,3:Still", "could not convert"),
        ("0.1,nan,0.3:1,2,3:Still", "not a finite number"),
        ("0.1,0.2,0.3:1,2,3:Jumping", "label 'Jumping' is not one of"),
    ],
)
def test_a_bad_case_is_refused_with_its_line(line: str, reason: str) -> None:
    with pytest.raises(RecordingError, match=reason) as caught:
        parse_ts(SAMPLE + line + "\n", "tiny.ts")
    assert "tiny.ts line 12" in str(caught.value)


def test_a_file_without_data_is_refused() -> None:
    with pytest.raises(RecordingError, match="no @data line"):
        parse_ts("@problemName Tiny\n")


def test_the_pin_is_read_from_the_requirements_line(tmp_path: Path) -> None:
    pins = tmp_path / "recordings.txt"
    pins.write_text(f"# a comment\naeon==1.6.0 --hash=sha256:{'ab' * 32}\n")
    pin = read_pin("aeon", pins)
    assert pin == Pin("aeon", "1.6.0", "ab" * 32)
    assert pin.wheel == "aeon-1.6.0-py3-none-any.whl"
    with pytest.raises(RecordingError, match="no pinned, hashed line for numpy"):
        read_pin("numpy", pins)


def _wheel(path: Path) -> Pin:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("pkg/data/Tiny.ts", SAMPLE)
    return Pin("pkg", "1.0", hashlib.sha256(path.read_bytes()).hexdigest())


def test_a_file_is_read_from_the_wheel_only_with_the_pinned_hash(tmp_path: Path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    pin = _wheel(wheel)
    assert read_from_wheel(wheel, pin, "pkg/data/Tiny.ts") == SAMPLE
    with pytest.raises(RecordingError, match=r"has no pkg/data/Other\.ts"):
        read_from_wheel(wheel, pin, "pkg/data/Other.ts")
    altered = Pin("pkg", "1.0", "0" * 64)
    with pytest.raises(RecordingError, match="not the pinned 0000"):
        read_from_wheel(wheel, altered, "pkg/data/Tiny.ts")


def test_a_missing_wheel_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="is missing: run `make bench-data` to download it"):
        read_from_wheel(tmp_path / "absent.whl", Pin("pkg", "1.0", "0" * 64), "x")

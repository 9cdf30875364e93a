"""The nudge's wire format: what it carries round-trips byte for byte, and anything
else is refused with MalformedNudge before it is sliced or kept."""

from __future__ import annotations

import json

import pytest

from edgeloop.contract import IOT_MESSAGE_UNIT, CarriedFile, MalformedNudge, Nudge
from edgeloop.contract.nudge import MAX_CARRIED_FILES, MAX_HEADER_BYTES, MAX_NUDGE_BYTES

TIMESTAMP = CarriedFile("tuf/metadata/timestamp.json", b'{"signed":{"v":1}}\n\x00\xff')
SNAPSHOT = CarriedFile("tuf/metadata/7.snapshot.json", b"s" * 439)
ROLE = CarriedFile("tuf/metadata/6.vibration.json", b"r" * 1838)
SPEC = CarriedFile("tuf/targets/vibration/3/" + "a" * 64 + ".spec.json", b"p" * 675)


def _raw(header: dict[str, object], body: bytes) -> bytes:
    return json.dumps(header).encode() + b"\n" + body


def test_carried_files_round_trip_byte_for_byte_in_order() -> None:
    nudge = Nudge("vibration", 3, (TIMESTAMP, SNAPSHOT, ROLE, SPEC))
    again = Nudge.from_bytes(nudge.to_bytes())
    assert again == nudge
    assert [f.path for f in again.carried] == [f.path for f in nudge.carried]
    assert again.files[TIMESTAMP.path] == TIMESTAMP.data  # newline and binary bytes intact


def test_a_nudge_carrying_nothing_is_the_small_json_nudge() -> None:
    assert Nudge("vibration", 3).to_bytes() == b'{"model":"vibration","version":3}'
    assert Nudge.from_bytes(b'{"model":"vibration","version":3}') == Nudge("vibration", 3)
    assert Nudge.from_bytes(b'{"model":"vibration","version":3}\n').carried == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            _raw({"model": "m", "version": 1, "files": [[TIMESTAMP.path, 5]]}, b""),
            "declares 5 bytes",
        ),
        (
            _raw({"model": "m", "version": 1, "files": [[TIMESTAMP.path, 2]]}, b"abc"),
            "declares 2 bytes of files, 3 follow",
        ),
        (_raw({"model": "m", "version": 1}, b"trailing"), "declares 0 bytes"),
        (b'{"model":"m","version":1,"files":[["tuf/metadata/x.json",3]]}', "declares 3 bytes"),
        (_raw({"model": "m", "version": 1, "files": [["tuf/../etc/passwd", 1]]}, b"x"), "path"),
        (
            _raw({"model": "m", "version": 1, "files": [["tuf/metadata/../../x", 1]]}, b"x"),
            "path",
        ),
        (_raw({"model": "m", "version": 1, "files": [["/tuf/metadata/x", 1]]}, b"x"), "path"),
        (_raw({"model": "m", "version": 1, "files": [["data/m/x.npz", 1]]}, b"x"), "path"),
        (_raw({"model": "m", "version": 1, "files": [["tuf/metadata//x", 1]]}, b"x"), "path"),
        (
            _raw({"model": "m", "version": 1, "files": [["tuf/pending/2.root.json", 1]]}, b"x"),
            "path",
        ),
        (
            _raw({"model": "m", "version": 1, "files": [[TIMESTAMP.path, 1]] * 2}, b"xy"),
            "carried twice",
        ),
        (_raw({"model": "m", "version": 1, "files": [[TIMESTAMP.path, 0]]}, b""), "length >= 1"),
        (_raw({"model": "m", "version": 1, "files": [[TIMESTAMP.path, -1]]}, b""), "length >= 1"),
        (_raw({"model": "m", "version": 1, "files": [[TIMESTAMP.path, True]]}, b"x"), "length"),
        (_raw({"model": "m", "version": 1, "files": [TIMESTAMP.path]}, b"x"), "[path, length"),
        (_raw({"model": "m", "version": 1, "files": {"a": 1}}, b"x"), "nudge.files"),
        (
            _raw(
                {
                    "model": "m",
                    "version": 1,
                    "files": [[f"tuf/metadata/{i}.m.json", 1] for i in range(9)],
                },
                b"x" * 9,
            ),
            "nudge.files",
        ),
        (_raw({"model": "m", "version": 1, "extra": 1}, b""), "unknown key"),
        (b"\xff\n" + b"x", "not JSON"),
    ],
)
def test_a_malformed_carrying_nudge_is_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedNudge, match=message.replace("[", r"\[")):
        Nudge.from_bytes(raw)


def test_the_bounds_are_checked_before_anything_is_parsed() -> None:
    with pytest.raises(MalformedNudge, match=f"at most {MAX_NUDGE_BYTES} bytes"):
        Nudge.from_bytes(b"{" + b" " * MAX_NUDGE_BYTES + b"}")
    # No newline within the header cap: refused without looking further.
    with pytest.raises(MalformedNudge, match="header line is at most"):
        Nudge.from_bytes(b'{"model":"m"' + b" " * MAX_HEADER_BYTES + b"}\nx")
    big = CarriedFile("tuf/metadata/6.m.json", b"r" * (MAX_NUDGE_BYTES - 200))
    with pytest.raises(MalformedNudge, match="at most"):
        Nudge.from_bytes(
            Nudge("m", 1, (big, CarriedFile("tuf/metadata/7.m.json", b"x" * 300))).to_bytes()
        )


def test_a_nudge_cannot_be_built_with_a_path_outside_the_repository() -> None:
    with pytest.raises(MalformedNudge, match="not a file under"):
        Nudge("m", 1, (CarriedFile("tuf/metadata/../x", b"x"),))
    with pytest.raises(MalformedNudge, match=f"at most {MAX_CARRIED_FILES}"):
        Nudge("m", 1, tuple(CarriedFile(f"tuf/metadata/{i}.m.json", b"x") for i in range(9)))


def test_filling_keeps_the_fetch_order_and_skips_what_does_not_fit() -> None:
    everything = (TIMESTAMP, SNAPSHOT, ROLE, SPEC)
    roomy = Nudge.filled("vibration", 3, everything, IOT_MESSAGE_UNIT)
    assert roomy.carried == everything
    # Room for timestamp and snapshot, not the role, but still for the smaller spec.
    tight = Nudge.filled("vibration", 3, everything, 1500)
    assert [f.path for f in tight.carried] == [TIMESTAMP.path, SNAPSHOT.path, SPEC.path]
    assert len(tight.to_bytes()) <= 1500
    bare = Nudge.filled("vibration", 3, everything, 40)
    assert bare == Nudge("vibration", 3)
    with pytest.raises(ValueError, match="carries nothing"):
        Nudge.filled("vibration", 3, everything, 10)

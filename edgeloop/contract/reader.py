"""The one strict reader: typed fields from a decoded JSON or TOML object.

Every message of the contract (manifest, status report, upload request and
answer) and the agent's config file are read through it. A missing key, a
wrong type, a value out of range or, where the caller lists the known keys,
an unknown key, is refused with the full path of the field named, as the
caller's own error type. Nothing is coerced: `true` is not 1 and 1 is not
`"1"`.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Collection
from typing import Any, TypeVar

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")

_MISSING: Any = object()
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_finite(value: int | float) -> bool:
    """math.isfinite, except that an integer too large for a float is not finite
    either: math.isfinite raises OverflowError on 10**400."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class Fields:
    """Reads one object. `error` is the exception type every refusal is raised as."""

    def __init__(
        self,
        doc: Any,
        where: str,
        error: type[Exception],
        known: Collection[str] | None = None,
    ) -> None:
        if not isinstance(doc, dict):
            raise error(f"{where} must be a JSON object, not {type(doc).__name__}")
        if known is not None:
            unknown = sorted(str(k) for k in doc if k not in known)
            if unknown:
                raise error(
                    f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})"
                )
        self.doc: dict[str, Any] = doc
        self.where = where
        self.error = error

    def path(self, key: str) -> str:
        return f"{self.where}.{key}"

    def has(self, key: str) -> bool:
        return self.doc.get(key) is not None

    def fail(self, key: str, expected: str) -> Exception:
        got = self.doc.get(key)
        return self.error(f"{self.path(key)} must be {expected}, not {got!r:.80}")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.doc:
            return self.doc[key]
        if default is _MISSING:
            raise self.error(f"{self.path(key)} is missing")
        return default

    def checked(self, key: str, value: T, check: Callable[[T], object]) -> T:
        """`value`, read from `key`, once `check` accepts it; the ValueError `check`
        raises becomes the caller's refusal, naming the field."""
        try:
            check(value)
        except ValueError as exc:
            raise self.error(f"{self.path(key)}: {exc}") from exc
        return value

    def text(self, key: str, default: Any = _MISSING, *, max_length: int = 4096) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value or len(value) > max_length:
            raise self.fail(key, f"a non-empty string of at most {max_length} characters")
        return value

    def any_text(self, key: str, default: Any = _MISSING, *, max_length: int = 4096) -> str:
        """A string that may be empty."""
        value = self._get(key, default)
        if not isinstance(value, str) or len(value) > max_length:
            raise self.fail(key, f"a string of at most {max_length} characters")
        return value

    def matching(self, key: str, pattern: re.Pattern[str], describe: str) -> str:
        value = self._get(key, _MISSING)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise self.fail(key, describe)
        return value

    def integer(
        self, key: str, default: Any = _MISSING, *, low: int = 0, high: int = 2**63 - 1
    ) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            bounds = f">= {low}" if high == 2**63 - 1 else f"in [{low}, {high}]"
            raise self.fail(key, f"an integer {bounds}")
        return value

    def optional_integer(self, key: str, *, low: int = 0, high: int = 2**63 - 1) -> int | None:
        if self.doc.get(key) is None:
            return None
        return self.integer(key, low=low, high=high)

    def number(
        self, key: str, default: Any = _MISSING, *, low: float = -math.inf, high: float = math.inf
    ) -> float:
        value = self._get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not _is_finite(value)
            or not low <= value <= high
        ):
            bounds = "" if (low, high) == (-math.inf, math.inf) else f" in [{low}, {high}]"
            raise self.fail(key, f"a finite number{bounds}")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.doc.get(key) is None else self.number(key)

    def flag(self, key: str, default: Any = _MISSING) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "true or false")
        return value

    def sha256(self, key: str) -> str:
        return self.matching(key, _SHA256, "64 lower-case hex digits (a SHA-256)")

    def choice(self, key: str, kind: type[E], default: Any = _MISSING) -> E:
        value = self._get(key, default)
        if isinstance(value, kind):
            return value
        try:
            return kind(value)
        except ValueError:
            names = ", ".join(str(m.value) for m in kind)
            raise self.error(f"{self.path(key)} {value!r:.40} is not one of {names}") from None

    def numbers(self, key: str, default: Any = _MISSING) -> dict[str, float]:
        value = self._get(key, default)
        if not isinstance(value, dict):
            raise self.fail(key, "an object of numbers")
        child = Fields(value, self.path(key), self.error)
        return {str(k): child.number(k) for k in value}

    def items(self, key: str, default: Any = _MISSING, *, max_items: int = 1 << 20) -> list[Any]:
        value = self._get(key, default)
        if not isinstance(value, list) or len(value) > max_items:
            raise self.fail(key, f"a list of at most {max_items} items")
        return value

    def children(self, key: str, default: Any = _MISSING) -> list[Fields]:
        return [
            Fields(item, f"{self.path(key)}[{i}]", self.error)
            for i, item in enumerate(self.items(key, default))
        ]

    def child(self, key: str, known: Collection[str] | None = None) -> Fields:
        return Fields(self._get(key, _MISSING), self.path(key), self.error, known)

    def matrix(self, key: str) -> tuple[tuple[float, ...], ...]:
        """A non-empty list of non-empty rows of finite numbers."""
        rows = self.items(key)
        if not rows:
            raise self.fail(key, "a non-empty list of rows")
        out = []
        for i, row in enumerate(rows):
            where = f"{self.path(key)}[{i}]"
            if not isinstance(row, list) or not row:
                raise self.error(f"{where} must be a non-empty list of numbers")
            out.append(tuple(self._finite(value, where) for value in row))
        return tuple(out)

    def _finite(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not _is_finite(value):
            raise self.error(f"{where} must hold finite numbers, not {value!r:.40}")
        return float(value)

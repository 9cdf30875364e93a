"""Real exported models with a few bytes changed, properly signed (a cloud that shipped a
broken model): the agent refuses each one that does not compute what its spec says, in a
child process, and keeps serving the model it had.

CI runs a dozen mutations; `make fuzz` runs thousands.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.scoring import Scorer
from edge.store import ModelStore
from edgeloop.contract import Step
from tests.support_http import artifact_server
from tests.support_release import Releases, vibration_runs
from tests.support_rig import Rig

# A fifth of the profile's examples: each one starts two child processes.
EXAMPLES = max(10, settings().max_examples // 5)

mutations = st.lists(
    st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(mutations)
def test_a_mutated_model_is_refused_or_computes_what_was_shipped(
    changes: list[tuple[float, int]],
) -> None:
    v1, v2, _ = vibration_runs()
    assert v2.tflite is not None
    model = bytearray(v2.tflite)
    for where, value in changes:
        model[int(where * len(model))] = value
    broken = replace(v2, tflite=bytes(model))
    with artifact_server() as server, tempfile.TemporaryDirectory() as tmp:
        releases = Releases(server, Path(tmp) / "cloud")
        store = ModelStore(Path(tmp) / "models")
        scorer = Scorer(0.6)
        updater = Rig(Path(tmp), server, releases, store, scorer).updater()
        releases.release(1, v1)
        assert updater.handle().step == Step.SUCCEEDED
        releases.release(2, broken)
        result = updater.handle()
        serving = scorer.model
        assert serving is not None
        if result.step == Step.SUCCEEDED:
            # The change missed everything the model computes (a name, padding):
            # it passed the same health checks as the real v2, in the child.
            assert serving.version == 2
        else:
            assert result.step == Step.FAILED, result
            assert serving.version == 1
            assert store.current() is not None
            assert store.current().version == 1  # type: ignore[union-attr]
        scores = serving.runtime.predict(np.zeros((2, 8), dtype=np.float32))
        assert scores.shape == (2,)

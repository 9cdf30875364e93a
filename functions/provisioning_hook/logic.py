"""The pre-provisioning hook's decision: admit a serial as the allow-list says, or refuse it.

IoT Core calls the hook for every `RegisterThing` made with the claim certificate,
before it creates anything. Everything the device sent is only a claim; the hook
answers from the allow-list (`functions.common.admission`) alone, and overrides
the model and thing group parameters so a device cannot choose its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edgeloop.contract.provisioning import SERIAL, HookAnswer, HookEvent, ProvisioningRefused
from edgeloop.contract.topics import check_thing_name
from functions.common.admission import Admission
from functions.common.env import ProvisioningHookEnv


class Admissions(Protocol):
    def lookup(self, serial: str) -> Admission | None: ...


class Things(Protocol):
    def has_active_certificate(self, thing: str) -> bool:
        """Whether the thing exists with a certificate that is still active."""
        ...


class RegistryThings:
    """The IoT registry's answer: the thing's principals, each certificate's status."""

    def __init__(self, iot: Any) -> None:
        self._iot = iot

    def has_active_certificate(self, thing: str) -> bool:
        try:
            principals = self._iot.list_thing_principals(thingName=thing)["principals"]
        except self._iot.exceptions.ResourceNotFoundException:
            return False
        for arn in principals:
            if ":cert/" not in arn:
                continue
            described = self._iot.describe_certificate(certificateId=arn.rsplit("/", 1)[-1])
            if described["certificateDescription"]["status"] == "ACTIVE":
                return True
        return False


@dataclass(frozen=True)
class Decision:
    """The answer for IoT Core, and what the log line says about it."""

    answer: HookAnswer
    serial: str | None
    reason: str

    @property
    def admitted(self) -> bool:
        return self.answer.allow

    def log_fields(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "decision": "admit" if self.admitted else "refuse",
            "reason": self.reason,
            "overrides": self.answer.overrides,
        }


def _refuse(serial: str | None, reason: str) -> Decision:
    return Decision(HookAnswer.refuse(), serial, reason)


def decide(
    env: ProvisioningHookEnv, admissions: Admissions, event: Any, things: Things | None = None
) -> Decision:
    """The answer for one RegisterThing. With `things`, a serial whose thing still holds
    an active certificate is refused: the claim is shared by a whole batch, so anyone
    holding it could otherwise take over an admitted device's identity. A device that
    lost its key is re-provisioned once the platform team deactivates the old
    certificate."""
    try:
        parsed = HookEvent.from_json(event)
    except ProvisioningRefused as exc:
        return _refuse(None, f"not a pre-provisioning hook event: {exc}")
    serial = parsed.parameters.get(SERIAL)
    if serial is None:
        return _refuse(None, f"no {SERIAL} parameter")
    try:
        check_thing_name(serial)
    except ValueError as exc:
        return _refuse(serial, f"invalid serial: {exc}")
    admission = admissions.lookup(serial)
    if admission is None:
        return _refuse(serial, "not on the allow-list")
    if things is not None and things.has_active_certificate(serial):
        return _refuse(
            serial,
            "already provisioned: the thing holds an active certificate (deactivate it "
            "to let this serial provision again)",
        )
    group = env.canary_group if admission.canary else env.fleet_group
    try:
        answer = HookAnswer.admit(admission.model, group)
    except ValueError as exc:
        # An entry edited by hand into something the contract refuses admits nobody.
        return _refuse(serial, f"the entry {admission.rule} is unusable: {exc}")
    return Decision(answer, serial, f"admitted by {admission.rule}")

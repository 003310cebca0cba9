"""Server-side automations the deployments rely on; `make deploy` applies them (`python -m flows.automations`).

A worker reports a flow run as crashed when the run's process dies under it, but nobody reports
anything when the worker itself dies with it (a lost machine, an OOM kill of the whole group):
the run would stay Running forever and, with the deployments' concurrency limit of one, block
every later run. Flow runs send heartbeat events (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set to 30 s
in prefect.yaml); this automation marks a run Crashed once its heartbeats stop for
HEARTBEAT_TIMEOUT without a final state, as Prefect's guide to zombie flow runs describes.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

ZOMBIE_AUTOMATION = "crash-flow-runs-without-heartbeat"
HEARTBEAT_TIMEOUT = timedelta(seconds=90)  # three heartbeats of prefect.yaml's 30 s


def zombie_automation() -> Automation:
    """Mark a flow run Crashed when no heartbeat or final state follows its last heartbeat in time."""
    return Automation(
        name=ZOMBIE_AUTOMATION,
        description="A flow run whose heartbeats stopped died with its worker or machine.",
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=HEARTBEAT_TIMEOUT,
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"No heartbeat for {HEARTBEAT_TIMEOUT.seconds} s: the flow run's worker or machine died.",
        )],
    )


def apply_automations() -> str:
    """Create the automation, or update the one of the same name; return what was done."""
    wanted = zombie_automation()
    try:
        existing = Automation.read(name=wanted.name)
    except ValueError:  # raised when no automation has that name
        wanted.create()
        return f"created automation {wanted.name}"
    wanted.id = existing.id
    wanted.update()
    return f"updated automation {wanted.name}"


if __name__ == "__main__":
    print(apply_automations())

"""A diagnostic job every worker runs: it sleeps in steps and reports progress.

Operators use it (``labelfree jobs probe``) to check that a queue's workers take work;
the foundation tests use it to kill a worker mid-task.
"""

from __future__ import annotations

import time

from labelfree.core.celery_app import QUEUES, job_task

PROBE_TASKS = {}

for _queue in QUEUES:

    def _probe(job_id: str, params: dict, progress) -> dict:
        steps = int(params.get("steps", 1))
        for i in range(steps):
            time.sleep(float(params.get("step_seconds", 0.0)))
            progress((i + 1) / steps)
        if params.get("fail"):
            raise RuntimeError(params["fail"])
        return {"steps": steps}

    PROBE_TASKS[_queue] = job_task(f"labelfree.probe.{_queue}", _queue)(_probe)

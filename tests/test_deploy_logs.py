"""RTD_LOG_FORMAT=json: every line a process writes is one JSON event, for log collectors."""

from __future__ import annotations

import orjson

from rtdstream.broker import EmbeddedBroker, free_port
from tests.support.processes import Proc, ProcessGroup

FIELDS = {"time", "level", "logger", "pid", "message"}


def events(proc: Proc) -> list[dict]:
    """The process's output, each line parsed as JSON (a line that is not fails the test)."""
    return [orjson.loads(line) for line in proc.log_text().splitlines()]


async def test_commands_write_one_json_object_per_event(
    rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    env = {**rtd_env, "RTD_LOG_FORMAT": "json"}
    sim = processes.start("sim", ["sim", "--port", str(free_port())], env)
    await sim.await_log("simulator listening")
    assert processes.terminate(sim) == 0
    logged = events(sim)
    assert all(FIELDS <= set(event) and event["pid"] == sim.pid for event in logged)
    assert [event["message"] for event in logged][-1] == "simulator stopped"


async def test_the_quiet_worker_writes_json_only_from_start_to_stop(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    env = {**rtd_env, "RTD_LOG_FORMAT": "json"}
    # -q leaves out Faust's start-up banner, the one thing the worker prints that is not a log event.
    worker = processes.start("worker", ["-q", "worker", "-l", "info", "--web-port", str(free_port())], env)
    await worker.await_log(r"\[\^Worker\]: Ready", timeout=90)
    assert processes.terminate(worker, timeout=60) == 0
    logged = events(worker)
    assert all(FIELDS <= set(event) for event in logged)
    assert {"faust.worker", "rtdstream.topics"} <= {event["logger"] for event in logged}
    # Faust's multi-line tables (recovery highwaters) stay inside one event.
    assert any("\n" in event["message"] for event in logged)

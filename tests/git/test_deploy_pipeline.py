"""The deploy pipeline with fake steps and a fake api: states, reasons, the live log."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from services.core.metrics import GitMetrics
from services.git.deploy_log import DeployLog
from services.git.locks import SiteLocks
from services.git.pipeline import DeployJob, Pipeline, StepFailed, Superseded
from services.git.queue import DeployQueue


class FakeApi:
    def __init__(self):
        self.updates = []

    def update(self, credential, site_id, deploy_id, changes):
        assert credential == "ecsd_cred"
        self.updates.append(changes)
        return {"id": deploy_id, "number": 1, "context": "production", **changes}


class Step:
    def __init__(self, name, action=None):
        self.name = name
        self.action = action
        self.ran = False

    def run(self, job):
        self.ran = True
        if self.action:
            self.action(job)


def _job(still_current=lambda: True):
    return DeployJob(
        site_id="s1",
        site={"hostnames": ["blog.localhost"], "url": "http://blog.localhost/"},
        deploy={"id": "d1", "number": 1, "context": "production", "branch": "main"},
        repo=None,
        commit=b"a" * 40,
        credential="ecsd_cred",
        log=DeployLog(),
        still_current=still_current,
    )


@pytest.fixture
def metrics():
    registry = CollectorRegistry()
    return GitMetrics(registry), registry


def _pipeline(steps, api, metrics, tmp_path):
    return Pipeline(steps, api, metrics[0], tmp_path / "work")


def test_states_follow_the_steps_and_each_step_is_timed(tmp_path, metrics):
    api = FakeApi()
    names = ["checkout", "build", "publish", "activate", "record"]
    steps = [Step(n) for n in names]
    assert _pipeline(steps, api, metrics, tmp_path).run(_job()) == "live"
    assert all(s.ran for s in steps)
    states = [u["state"] for u in api.updates if "state" in u]
    assert states == ["building", "publishing"]  # "live" is the record step's to say
    # Fast steps that change no state are not worth an api write each.
    assert [u["step"] for u in api.updates] == ["checkout", "publish"]
    registry = metrics[1]
    for name in names:
        count = registry.get_sample_value(
            "ecstatic_git_deploy_step_duration_seconds_count", {"step": name}
        )
        assert count == 1
    assert (
        registry.get_sample_value(
            "ecstatic_git_deploys_total", {"outcome": "live", "reason": "none"}
        )
        == 1
    )


def test_a_failed_step_stops_the_rest_and_records_its_reason_and_tail(tmp_path, metrics):
    api = FakeApi()

    def boom(job):
        raise StepFailed("build_failed", "the build exited with 2", tail=["make: *** 2"])

    steps = [Step("checkout"), Step("build", boom), Step("publish"), Step("activate")]
    job = _job()
    assert _pipeline(steps, api, metrics, tmp_path).run(job) == "failed"
    assert not steps[2].ran and not steps[3].ran
    assert api.updates[-1]["state"] == "failed" and api.updates[-1]["reason"] == "build_failed"
    lines = job.log.lines
    assert "make: *** 2" in lines
    assert "error: deploy failed: the build exited with 2" in lines
    assert "error: the live site was not changed" in lines
    assert not list((tmp_path / "work").iterdir())  # the working directory is gone


def test_a_crash_is_an_internal_failure_not_a_hung_record(tmp_path, metrics):
    api = FakeApi()

    def crash(job):
        raise ZeroDivisionError

    job = _job()
    assert _pipeline([Step("checkout", crash)], api, metrics, tmp_path).run(job) == "failed"
    assert api.updates[-1]["reason"] == "internal"
    assert all("ZeroDivision" not in line for line in job.log.lines)  # no traceback to users


def test_a_newer_push_supersedes_a_waiting_deploy(tmp_path, metrics):
    api = FakeApi()
    step = Step("checkout")
    job = _job(still_current=lambda: False)
    assert _pipeline([step], api, metrics, tmp_path).run(job) == "superseded"
    assert not step.ran
    assert api.updates[-1]["state"] == "superseded"

    def overtaken(job):
        raise Superseded()

    assert _pipeline([Step("build", overtaken)], FakeApi(), metrics, tmp_path).run(_job()) == (
        "superseded"
    )


def test_an_unreachable_api_never_stops_the_deploy(tmp_path, metrics):
    class DownApi:
        def update(self, *args):
            raise ConnectionError("api down")

    steps = [Step("checkout"), Step("publish")]
    assert _pipeline(steps, DownApi(), metrics, tmp_path).run(_job()) == "live"


def test_followers_see_lines_as_they_are_written_and_the_end():
    log = DeployLog()
    seen = []

    def follow():
        for line in log.follow(poll=0.05):
            seen.append((line, time.monotonic()))

    follower = threading.Thread(target=follow)
    follower.start()
    log.write("first")
    first_written = time.monotonic()
    time.sleep(0.5)
    assert [line for line, _ in seen] == ["first"]  # before the second line exists
    log.write("second\nthird")
    log.close()
    follower.join(5)
    assert [line for line, _ in seen] == ["first", "second", "third"]
    assert seen[0][1] - first_written < 0.4


def test_lines_are_shipped_in_batches_including_the_last_ones():
    batches = []
    log = DeployLog(ship=batches.append, batch_seconds=0.05)
    for n in range(50):
        log.write(f"line {n}")
    log.close()
    shipped = [line for batch in batches for line in batch]
    assert shipped == [f"line {n}" for n in range(50)]
    assert len(batches) < 50


def test_a_failing_shipper_loses_the_api_copy_only():
    def ship(lines):
        raise ConnectionError

    log = DeployLog(ship=ship, batch_seconds=0.01)
    log.write("kept")
    log.close()
    assert log.lines == ["kept"]


def test_the_queue_runs_one_deploy_per_site_at_a_time_and_closes_each_log(tmp_path, metrics):
    running, overlap = [], []

    def slow(job):
        running.append(job.deploy_id)
        if len(running) > 1:
            overlap.append(list(running))
        time.sleep(0.2)
        running.remove(job.deploy_id)

    pipeline = _pipeline([Step("build", slow)], FakeApi(), metrics, tmp_path)
    queue = DeployQueue(pipeline, SiteLocks(tmp_path / "locks"), workers=3)
    jobs = [_job() for _ in range(3)]
    for n, job in enumerate(jobs):
        job.deploy = {**job.deploy, "id": f"d{n}"}
    futures = [queue.submit(job) for job in jobs]
    assert [f.result(10) for f in futures] == ["live"] * 3
    assert overlap == []
    for job in jobs:
        assert list(job.log.follow()) == job.log.lines  # closed: following ends
    queue.stop(5)
    with pytest.raises(RuntimeError, match="stopping"):
        queue.submit(_job())


class TidiedStep(Step):
    """A step whose ``finish`` (housekeeping after the outcome) waits to be let go."""

    def __init__(self, name, action=None):
        super().__init__(name, action)
        self.tidying, self.release, self.tidied = threading.Event(), threading.Event(), []

    def finish(self, job):
        self.tidying.set()
        assert self.release.wait(10)
        self.tidied.append(job.deploy_id)


def test_the_pushers_output_ends_at_the_outcome_and_tidying_keeps_the_site_lock(tmp_path, metrics):
    started = []
    step = TidiedStep("build", lambda job: started.append(job.deploy_id))
    pipeline = _pipeline([step], FakeApi(), metrics, tmp_path)
    queue = DeployQueue(pipeline, SiteLocks(tmp_path / "locks"), workers=2)
    first, second = _job(), _job()
    second.deploy = {**second.deploy, "id": "d2"}
    left = []
    first.finished = lambda: left.append("d1")
    one = queue.submit(first)
    assert step.tidying.wait(10)
    # The outcome is recorded and the log closed while ``finish`` still runs: a follower
    # (the pusher's connection) ends now, and the in-flight entry is gone.
    followed = []
    follower = threading.Thread(target=lambda: followed.extend(first.log.follow(poll=0.05)))
    follower.start()
    follower.join(5)
    assert not follower.is_alive() and followed == first.log.lines
    assert left == ["d1"] and not one.done()
    two = queue.submit(second)
    time.sleep(0.3)
    assert started == ["d1"]  # the site's next deploy waits for the tidying
    step.release.set()
    assert one.result(10) == two.result(10) == "live"
    assert started == ["d1", "d2"] and step.tidied == ["d1", "d2"]
    queue.stop(5)


def test_actions_run_in_order_after_the_lines_written_before_them():
    events = []
    log = DeployLog(ship=lambda lines: events.append(("ship", list(lines))), batch_seconds=5.0)
    log.write("one")
    first = log.then(lambda: events.append(("update", "building")) or "a")
    log.write("two")
    started = time.monotonic()
    assert log.call(lambda: events.append(("update", "live")) or "b") == "b"
    # An action waiting cuts the batch's wait short: no 5 s pause before a state change.
    assert time.monotonic() - started < 2.0
    assert first.result(1) == "a"
    log.close()
    shipped_before = [e for e in events[: events.index(("update", "building"))] if e[0] == "ship"]
    assert [line for _, batch in shipped_before for line in batch][:1] == ["one"]
    before_live = events[: events.index(("update", "live"))]
    assert [line for kind, batch in before_live if kind == "ship" for line in batch] == [
        "one",
        "two",
    ]
    assert events.index(("update", "building")) < events.index(("update", "live"))


def test_an_action_that_raises_hands_its_error_to_the_caller():
    log = DeployLog(ship=lambda lines: None)

    def broken():
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        log.call(broken)
    log.close()
    assert log.call(lambda: 7) == 7  # after close: run in place


class ShippingApi(FakeApi):
    """Sees the log as the api would: each update notes how many lines it had then."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []
        self.seen_at_update: list[tuple[dict, list[str]]] = []

    def append_log(self, lines):
        self.lines.extend(lines)

    def update(self, credential, site_id, deploy_id, changes):
        self.seen_at_update.append((changes, list(self.lines)))
        return super().update(credential, site_id, deploy_id, changes)


@pytest.mark.parametrize("outcome", ["live", "failed"])
def test_the_api_has_the_whole_log_when_the_record_reaches_its_state(tmp_path, metrics, outcome):
    api = ShippingApi()

    def work(job):
        for n in range(5):
            job.log.write(f"building {n}")
        if outcome == "failed":
            raise StepFailed("build_failed", "the build ended with exit status 3")

    def record(job):  # as steps.Record does: the line, then the state, through the log
        job.log.write("live at http://blog.localhost/")
        job.log.call(lambda: api.update(job.credential, "s1", "d1", {"state": "live"}))

    job = _job()
    job.log = DeployLog(ship=api.append_log, batch_seconds=0.5)
    started = time.monotonic()
    steps = [Step("build", work), Step("record", record)]
    assert _pipeline(steps, api, metrics, tmp_path).run(job) == outcome
    job.log.close()

    final, lines_then = api.seen_at_update[-1]
    if outcome == "failed":
        assert final["state"] == "failed"
        assert lines_then == job.log.lines  # every line, the error lines included
        assert lines_then[-2:] == [
            "error: deploy failed: the build ended with exit status 3",
            "error: the live site was not changed",
        ]
    else:
        assert final == {"state": "live"}
        assert lines_then == job.log.lines and lines_then[-1] == "live at http://blog.localhost/"
    # The state changes never waited out the 0.5 s batch.
    assert time.monotonic() - started < 0.5


def test_a_deploy_whose_site_stays_busy_is_recorded_failed(tmp_path, metrics):
    api = FakeApi()
    locks = SiteLocks(tmp_path / "locks", timeout=0.2, poll=0.02)
    queue = DeployQueue(_pipeline([Step("build")], api, metrics, tmp_path), locks, workers=1)
    job = _job()
    with locks.hold("s1"):
        assert queue.submit(job).result(10) == "failed"
    assert api.updates[-1]["state"] == "failed" and api.updates[-1]["reason"] == "internal"
    assert "error: deploy failed: another deploy of site s1 is still running" in job.log.lines
    queue.stop(5)


def test_a_slow_step_is_named_in_the_record_in_order(tmp_path, metrics):
    api = FakeApi()
    steps = [Step("checkout"), Step("build", lambda job: time.sleep(0.6)), Step("publish")]
    assert _pipeline(steps, api, metrics, tmp_path).run(_job()) == "live"
    assert [u.get("step") for u in api.updates] == ["checkout", "build", "publish"]
    assert api.updates[1] == {"step": "build"}

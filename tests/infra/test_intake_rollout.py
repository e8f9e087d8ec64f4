"""The intake's Deployment rolls with a surge: the new pod is ready before the old one
drains (issue 7: a rolling restart under load loses nothing)."""

from __future__ import annotations

import pytest

from services.core.config import Config
from services.server import ProcessServer
from tests.infra.platform_mocks import declare, of_kind, platform_args


@pytest.fixture(scope="module")
def intake():
    return of_kind(declare(platform_args()), "Deployment")["intake"]["spec"]


def test_the_new_intake_is_up_before_the_old_one_stops(intake):
    assert intake["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_the_grace_period_outlasts_the_drain(intake, tmp_path):
    # SIGTERM: gunicorn finishes its requests, then the intake drains its senders and
    # flushes, all within gunicorn's graceful timeout; the kubelet must wait longer.
    server = ProcessServer(["intake"], Config.from_env({"ECSTATIC_HOME": str(tmp_path)}))
    drain = server.cfg.graceful_timeout
    assert intake["template"]["spec"]["terminationGracePeriodSeconds"] > drain >= 25

import socket
import sys
import time
from pathlib import Path

import pytest
from build_kit import BASE_UID, wait_no_processes, write_tree

from services.build.bwrap import Sandbox
from services.build.config import ConfigError
from services.build.limits import BuildLimits

pytestmark = pytest.mark.integration

SECRETS = {
    "ECSTATIC_HOME": "/var/lib/ecstatic-secret-home",
    "ECSTATIC_ADMIN_TOKEN": "tok-ecstatic-123",
    "GITHUB_TOKEN": "ghp_secretvalue",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "DB_PASSWORD": "hunter2-password",
    "API_KEY": "key-value-42",
}


@pytest.fixture
def secret_env(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def test_success_publishes_the_tree_copy(runner):
    result, lines = runner("echo built > out.txt; ls")
    assert result.ok and result.reason == "ok" and result.exit_code == 0
    assert lines == ["index.html", "out.txt"] == result.tail
    assert (result.publish_dir / "out.txt").read_text() == "built\n"
    assert not (runner.source / "out.txt").exists()  # the source is copied, not used


def test_environment_has_nothing_of_the_parent(runner, secret_env):
    result, lines = runner("env", environment={"HUGO_ENV": "production"})
    assert result.ok
    names = {line.split("=", 1)[0] for line in lines}
    assert names <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "CI", "PWD", "HUGO_ENV"}
    assert "CI=true" in lines and "HOME=/build-home" in lines and "HUGO_ENV=production" in lines
    for name, value in SECRETS.items():
        assert not any(name in line or value in line for line in lines)
    assert not any(word in line.upper() for line in lines for word in ("TOKEN", "PASSWORD"))


def test_proc_environ_shows_nothing_of_the_parent(runner, secret_env):
    result, lines = runner(r"for f in /proc/[0-9]*/environ; do tr '\000' '\n' < $f; done")
    assert result.ok, result.tail
    assert any(line.startswith("PATH=") for line in lines)  # it did read something
    for name, value in SECRETS.items():
        assert not any(name in line or value in line for line in lines)


def test_reserved_environment_is_refused_again(runner):
    with pytest.raises(ConfigError):
        runner("env", environment={"LD_PRELOAD": "/tmp/x.so"})


def test_data_directory_is_invisible(work_root, runner):
    home = write_tree(work_root / "ecstatic-home", {"secrets/token": "s3cret"})
    result, lines = runner(f"ls {home}; ls {home}/secrets; cat {home}/secrets/token")
    assert result.reason == "failed" and result.exit_code != 0
    assert "s3cret" not in lines
    assert all("No such file or directory" in line for line in lines), lines


def test_a_toolchain_overlapping_the_data_directory_is_refused(work_root, runner):
    home = write_tree(work_root / "ecstatic-home", {"venv/bin/tool": "x"})
    sandbox = Sandbox(base_uid=BASE_UID, toolchains=(home / "venv",), hidden=(home,))
    result, _ = runner("true", sandbox=sandbox)
    assert result.reason == "sandbox_error" and "overlaps the hidden path" in result.message


def test_no_network_not_even_loopback(runner):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    script = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused', exc)\n"
        "try:\n"
        "    socket.getaddrinfo('deb.debian.org', 443)\n"
        "    print('resolved')\n"
        "except OSError as exc:\n"
        "    print('no dns', exc)\n"
    )
    try:
        result, lines = runner(f"python3 -c {_quote(script)}")
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
    assert result.ok, result.tail
    assert lines[0].startswith("refused") and lines[1].startswith("no dns")


def test_runs_unprivileged_as_the_slot_uid(runner):
    result, lines = runner("id -u; id -g; id -G; touch /usr/x 2>&1; touch /x 2>&1; true", slot=3)
    assert result.ok
    assert lines[:3] == [str(BASE_UID + 3)] * 3
    assert "0" not in lines[:3]
    assert "Read-only file system" in lines[3] and "Read-only file system" in lines[4]


def test_fork_bomb_is_stopped_by_the_process_limit(runner):
    limits = BuildLimits(timeout_seconds=20, max_processes=40)
    started = time.monotonic()
    result, lines = runner("bomb() { bomb | bomb & }; bomb; sleep 2", limits=limits)
    # The limit makes forks fail; when the main shell ends, bwrap's pid 1 takes the rest.
    assert result.reason in ("ok", "failed") and time.monotonic() - started < 15
    assert any("Cannot fork" in line for line in lines)
    assert wait_no_processes(BASE_UID) == []


def test_process_count_never_exceeds_the_limit(runner):
    limits = BuildLimits(timeout_seconds=20, max_processes=30)
    command = "i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); echo $i; done"
    result, lines = runner(command, limits=limits)
    assert result.reason == "failed"
    assert any("Cannot fork" in line for line in lines)
    started = [int(line) for line in lines if line.isdigit()]
    assert 5 < max(started) < 30
    assert wait_no_processes(BASE_UID) == []  # the background sleeps died with the build


def test_allocation_over_the_memory_cap_fails(runner):
    limits = BuildLimits(timeout_seconds=30, memory_bytes=256 * 2**20)
    result, lines = runner("python3 -c 'b = bytearray(512 * 2**20)'", limits=limits)
    assert result.reason == "memory" and not result.ok
    assert any("MemoryError" in line for line in lines)
    result, _ = runner("python3 -c 'b = bytearray(64 * 2**20)'", limits=limits)
    assert result.ok


def test_timeout_kills_the_build_and_its_children(runner):
    limits = BuildLimits(timeout_seconds=2)
    started = time.monotonic()
    result, _ = runner("sleep 100 & sleep 100; echo never", limits=limits)
    elapsed = time.monotonic() - started
    assert result.reason == "timeout" and result.exit_code is None and not result.ok
    assert 2.0 <= elapsed < 3.0 and 2.0 <= result.seconds < 3.0
    assert "timed out after 2 s" in result.message
    assert wait_no_processes(BASE_UID) == []


def test_output_flood_hits_the_output_cap(runner):
    limits = BuildLimits(timeout_seconds=30, max_output_bytes=100_000)
    started = time.monotonic()
    result, lines = runner("yes 'flood flood flood'", limits=limits)
    assert result.reason == "output_too_large" and not result.ok
    assert time.monotonic() - started < 10
    assert sum(len(line) + 1 for line in lines) <= 100_000
    assert len(result.tail) == 40 and result.tail[-1].startswith("flood")


def test_live_output_arrives_as_it_is_printed(runner):
    stamps: dict[str, float] = {}

    def on_line(line):
        stamps[line] = time.monotonic()

    result, _ = runner("echo first; sleep 3; echo second", on_line=on_line)
    assert result.ok
    gap = stamps["second"] - stamps["first"]
    assert gap >= 2.0, gap


def test_long_lines_are_split(runner):
    limits = BuildLimits(timeout_seconds=30, max_line_chars=2000)
    result, lines = runner("head -c 5000 /dev/zero | tr '\\000' a; echo; echo end", limits=limits)
    assert [len(line) for line in lines] == [2000, 2000, 1000, 3]


def test_failure_reports_exit_code_and_tail(runner):
    result, _ = runner("for i in $(seq 100); do echo line $i; done; echo oops >&2; exit 3")
    assert result.reason == "failed" and result.exit_code == 3 and not result.ok
    assert len(result.tail) == 40 and result.tail[-2:] == ["line 100", "oops"]
    assert "exited with status 3" in result.message


def test_file_size_limit(runner):
    limits = BuildLimits(timeout_seconds=30, max_file_bytes=1_000_000)
    result, _ = runner("head -c 2000000 /dev/zero > big", limits=limits)
    assert result.reason == "failed"
    assert (result.publish_dir / "big").stat().st_size == 1_000_000


def test_workspace_size_is_watched(runner):
    limits = BuildLimits(timeout_seconds=30, max_workspace_bytes=2_000_000, check_seconds=0.2)
    command = "i=0; while true; do head -c 100000 /dev/zero > f$i; i=$((i+1)); sleep 0.01; done"
    result, _ = runner(command, limits=limits)
    assert result.reason == "output_too_large"
    assert result.seconds < 10


def test_publish_directory_checks(runner):
    result, _ = runner("true", publish="public")
    assert result.reason == "failed" and "did not create the directory 'public'" in result.message
    result, _ = runner("mkdir public; ln -s /etc/passwd public/pw", publish="public")
    assert result.reason == "failed" and "symlink 'public/pw'" in result.message
    result, _ = runner("ln -s / public", publish="public")
    assert result.reason == "failed"
    result, _ = runner("mkdir public; mkfifo public/p", publish="public")
    assert result.reason == "failed" and "special file" in result.message
    limits = BuildLimits(timeout_seconds=30, max_publish_bytes=10_000)
    result, _ = runner("mkdir out; head -c 20000 /dev/zero > out/x", publish="out", limits=limits)
    assert result.reason == "output_too_large"
    result, _ = runner("mkdir -p a/b; echo hi > a/b/index.html", publish="a/b")
    assert result.ok and (result.publish_dir / "index.html").read_text() == "hi\n"


def test_sandbox_error_when_bwrap_cannot_start(runner):
    result, lines = runner("true", sandbox=Sandbox(base_uid=BASE_UID, bwrap="/nonexistent/bwrap"))
    assert result.reason == "sandbox_error" and not result.ok and result.exit_code is None
    assert "the sandbox did not start" in result.message


def test_a_raising_callback_stops_the_build(runner):
    def on_line(line):
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        runner("echo hi; sleep 100", on_line=on_line)
    assert wait_no_processes(BASE_UID) == []


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def test_toolchain_is_read_only_and_alone(runner):
    venv = Path(sys.prefix)
    sandbox = Sandbox(base_uid=BASE_UID, toolchains=(venv,))
    command = f"ls -A {venv.parent}; touch {venv}/x 2>&1; python -c 'import mkdocs; print(1)'"
    result, lines = runner(command, sandbox=sandbox)
    assert result.ok, lines
    assert lines[0] == venv.name  # nothing else of the project is visible
    assert "Read-only file system" in lines[1] and lines[2] == "1"

"""The user-agent cache survives a restart (a restart must not re-parse every UA)."""

from __future__ import annotations

import json
import stat

from services.intake.agents import Agent, AgentParser


def counting_parser():
    calls = []

    class Found:
        def __init__(self, ua):
            calls.append(ua)

        def is_bot(self):
            return False

        def client_type(self):
            return "browser"

        def client_name(self):
            return "Firefox"

        def os_name(self):
            return "Linux"

        def device_type(self):
            return "desktop"

    return AgentParser(is_crawler=lambda ua: "bot" in ua, detect=Found), calls


def test_saved_agents_are_not_parsed_again(tmp_path):
    first, calls = counting_parser()
    assert first.parse("Mozilla/5.0 Firefox") == Agent("Firefox", "Linux", "desktop", False, "")
    assert first.parse("somebot/1").is_bot
    first.save(tmp_path / "agents.json")
    assert stat.S_IMODE((tmp_path / "agents.json").stat().st_mode) == 0o600

    second, second_calls = counting_parser()
    assert second.load(tmp_path / "agents.json") == 2
    assert second.parse("somebot/1").bot_reason == "crawler-list"
    assert second.parse("Mozilla/5.0 Firefox").browser == "Firefox"
    assert second_calls == [] and second.hits == 2


def test_a_cache_from_other_parser_versions_is_ignored(tmp_path):
    first, _ = counting_parser()
    first.parse("Mozilla/5.0 Firefox")
    first.save(tmp_path / "agents.json")
    data = json.loads((tmp_path / "agents.json").read_text())
    data["versions"]["device_detector"] = "0.0.1"
    (tmp_path / "agents.json").write_text(json.dumps(data))
    second, calls = counting_parser()
    assert second.load(tmp_path / "agents.json") == 0
    second.parse("Mozilla/5.0 Firefox")
    assert calls == ["Mozilla/5.0 Firefox"]


def test_junk_on_disk_is_ignored(tmp_path):
    (tmp_path / "agents.json").write_text("{not json")
    parser, _ = counting_parser()
    assert parser.load(tmp_path / "agents.json") == 0
    assert parser.load(tmp_path / "missing.json") == 0

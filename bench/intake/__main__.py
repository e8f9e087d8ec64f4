"""Intake benchmark: Bunny syslog lines to queryable rows, against two baselines.

    .venv/bin/python -m bench.intake [--lines N] [--sites N] [--json PATH] [--seed S]
        [--agents K] [--timeout S] [--set ECSTATIC_X=V ...] [--workdir DIR]

One run, all on this machine and in this order:

1. ``ecstatic serve api`` (throwaway ``ECSTATIC_HOME``, free ports); a user made with
   ``ecstatic admin create-user``; ``--sites`` sites made through ``POST /v1/sites``.
2. ``--lines`` Bunny JSON records for those sites' hostnames (seeded; see ``corpus``),
   written as JSON lines, as RFC 5424 syslog lines and as Combined Log Format.
3. Baseline (a): chDB's native ``INSERT ... SELECT ... FROM file(..., JSONEachRow)`` of
   the JSON lines, in its own process on its own data path (``native``), ``--native-runs``
   times (3) on fresh paths; the median run counts (one run of a few seconds swings by
   a third on this shared host), every run's seconds are reported.
4. Baseline (b): GoAccess parsing the CLF lines to a JSON report (``goaccess``).
5. ``ecstatic serve intake,query``; every syslog line sent over one TCP connection; the
   clock runs from the first byte until the stats API counts every line (``measure``).

The report gives lines/s of all three, the intake's ratios to both baselines beside
the goals (>= 0.3x native, >= 2x GoAccess; printed, never asserted), the intake's
per-stage seconds from ``ecstatic_intake_stage_seconds_total``, its invalid lines, and
the RSS of the intake+query process tree over the run. Exit status 1 when not every
line became queryable or a baseline did not see every line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from . import corpus, goaccess, measure
from .stack import ServiceError, Services

GOALS = {"native": 0.3, "goaccess": 2.0}  # intake lines/s over the baseline's, at least
# The query room answers the sweeps that stop the clock: it keeps each site's
# authorization for the whole run, so a sweep costs its queries, not api round trips.
# Nothing of the intake's is changed.
QUERY_SETTINGS = {"ECSTATIC_AUTH_CACHE_SECONDS": "3600"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.intake", description=__doc__.split("\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000, help="lines to send (1,000,000)")
    p.add_argument("--sites", type=int, default=200, help="sites they are for (200)")
    p.add_argument("--json", type=Path, help="also write the full result as JSON here")
    p.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    p.add_argument("--agents", type=int, default=300, help="distinct user agents (300)")
    p.add_argument(
        "--native-runs",
        type=int,
        default=3,
        help="runs of the native baseline; the median counts (3)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds the intake gets to make every line queryable (1800)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ECSTATIC_X=V",
        help="extra environment for the services (repeatable)",
    )
    p.add_argument(
        "--warm-agents",
        action="store_true",
        help="start the intake with its saved user-agent cache already holding the corpus's "
        "agents, as after a restart (default: cold, every agent parsed during the run)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep the corpus, logs and data here instead of a temporary folder",
    )
    args = p.parse_args(argv)
    if args.lines < 1 or args.sites < 1 or args.agents < 1 or args.native_runs < 1:
        p.error("--lines, --sites, --agents and --native-runs must be positive")
    if args.agents > args.lines:
        p.error("--agents must not exceed --lines (every agent appears)")
    return args


def _settings(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("ECSTATIC_"):
            raise SystemExit(f"--set wants ECSTATIC_NAME=VALUE, not {pair!r}")
        settings[key] = value
    return settings


def _native(jsonl: Path, data: Path) -> dict:
    # Its own process: chDB allows one engine per process and per data path.
    result = subprocess.run(
        [sys.executable, "-m", "bench.intake.native", str(jsonl), str(data)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    if result.returncode != 0:
        raise RuntimeError(f"native baseline failed: {result.stderr.strip()[-1000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median_native(jsonl: Path, work: Path, runs: int) -> dict:
    results = [_native(jsonl, work / f"native-{index}") for index in range(runs)]
    median = sorted(results, key=lambda run: run["seconds"])[(runs - 1) // 2]
    return {**median, "all_seconds": [run["seconds"] for run in results]}


def _rate(lines: int, seconds: float | None) -> float | None:
    return lines / seconds if seconds else None


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _warm_agents(jsonl: Path, target: Path) -> None:
    """What an intake that saw these agents before saves at stop (services/intake/agents.py)."""
    import json

    from services.intake.agents import AgentParser

    parser = AgentParser()
    with jsonl.open("rb") as lines:
        for agent in {json.loads(line).get("UserAgent", "") for line in lines}:
            parser.parse(agent)
    target.parent.mkdir(parents=True, exist_ok=True)
    parser.save(target)


def run(args: argparse.Namespace, work: Path) -> dict:
    """The whole benchmark in ``work``; returns the result."""
    services = Services(work / "home", {**QUERY_SETTINGS, **_settings(args.set)})
    services.home.mkdir(parents=True)
    result: dict = {
        "config": {
            "lines": args.lines,
            "sites": args.sites,
            "seed": args.seed,
            "agents": args.agents,
            "settings": {**QUERY_SETTINGS, **_settings(args.set)},
        },
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_before": _load(),
        },
    }
    try:
        services.start("api", ["api"])
        token = services.create_user("bench")
        sites = services.create_sites(token, [f"bench-{i:03d}" for i in range(args.sites)])
        hosts = [site["hostnames"][0] for site in sites]
        hostmap = services.hostmap()
        missing = [h for h in hosts if h not in hostmap]
        if missing:
            raise ServiceError(f"hostmap lacks {len(missing)} of the sites, e.g. {missing[0]}")
        files = corpus.write(
            corpus.Corpus(args.lines, hosts, args.seed, args.agents), work / "corpus"
        )
        result["corpus"] = {
            "lines": files.lines,
            "distinct_agents": files.distinct_agents,
            "syslog_bytes": files.syslog.stat().st_size,
            "jsonl_bytes": files.jsonl.stat().st_size,
            "clf_bytes": files.clf.stat().st_size,
            "first_ms": files.first_ms,
            "last_ms": files.last_ms,
            "busiest_site_lines": max(files.per_host.values()),
            "quietest_site_lines": min(files.per_host.values()),
        }
        result["native"] = _median_native(files.jsonl, work, args.native_runs)
        result["goaccess"] = goaccess.measure(files.clf, work / "goaccess.json")
        result["machine"]["load_before_intake"] = _load()
        result["config"]["agents_cache"] = "warm" if args.warm_agents else "cold"
        if args.warm_agents:
            _warm_agents(files.jsonl, services.home / "intake" / "agents.json")
        pid = services.start("intake,query", ["intake", "query"])
        expected = {site["id"]: files.per_host[host] for site, host in zip(sites, hosts)}
        intake = measure.run(services, pid, token, expected, files.syslog, args.lines, args.timeout)
        result["intake"] = asdict(intake)
    finally:
        services.stop()
        result["machine"]["load_after"] = _load()
    return _with_rates(result)


def _intake_seconds(intake: dict) -> float | None:
    """First byte to every row stored (see ``measure``): the counter's time, once the
    stats API has found every site's count exact; the sweep's when there is no counter."""
    if not intake["complete"]:
        return None
    return intake["inserted_seconds"] or intake["queryable_seconds"]


def _with_rates(result: dict) -> dict:
    lines = result["config"]["lines"]
    intake = result["intake"]
    rates = {
        "intake": _rate(lines, _intake_seconds(intake)),
        "native": _rate(lines, result["native"]["seconds"]),
        "goaccess": _rate(lines, result["goaccess"]["seconds"]),
        # Not a ratio's input: until the stats API had confirmed every site.
        "intake_confirmed": _rate(lines, intake["queryable_seconds"]),
    }
    result["lines_per_second"] = rates
    result["ratios"] = {
        name: {
            "ratio": rates["intake"] / rates[name] if rates["intake"] and rates[name] else None,
            "goal": goal,
        }
        for name, goal in GOALS.items()
    }
    for entry in result["ratios"].values():
        entry["met"] = entry["ratio"] is not None and entry["ratio"] >= entry["goal"]
    result["checks"] = {
        "intake_all_queryable": intake["complete"],
        "native_rows": result["native"]["rows"] == lines,
        "goaccess_valid_requests": result["goaccess"]["valid_requests"] == lines,
    }
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def text(result: dict) -> str:
    """The human report."""
    cfg, machine, intake = result["config"], result["machine"], result["intake"]
    rates, ratios, lines = result["lines_per_second"], result["ratios"], cfg["lines"]
    out = [
        f"intake benchmark: {lines:,} Bunny lines for {cfg['sites']} sites over one TCP "
        f"connection (seed {cfg['seed']}, {result['corpus']['distinct_agents']} user agents, "
        f"user-agent cache {cfg.get('agents_cache', 'cold')}); "
        f"Python {machine['python']}, {machine['cpus']} CPUs, load {machine['load_before']} "
        f"before, {machine['load_after']} after",
        "",
        f"{'measurement':<44}{'seconds':>9}{'lines/s':>12}{'cpu s':>8}",
        f"{'intake: first byte -> every row stored *':<44}"
        f"{_fmt(_intake_seconds(intake), '9.2f')}"
        f"{_fmt(rates['intake'], '12,.0f')}{_fmt(intake.get('inserted_cpu_seconds'), '8.1f')}",
        f"{'  socket took every byte':<44}{_fmt(intake['sent_seconds'], '9.2f')}",
        f"{'  stats API confirmed every site':<44}{_fmt(intake['queryable_seconds'], '9.2f')}"
        f"{_fmt(rates['intake_confirmed'], '12,.0f')}{intake['cpu_seconds']:8.1f}",
        f"{'  of which the confirming sweep':<44}{_fmt(intake['confirm_seconds'], '9.2f')}"
        f"   (untimed warm-up sweep: {_fmt(intake['warm_sweep_seconds'], '.2f')} s)",
        f"{'native: chDB INSERT..SELECT FROM file()':<44}{result['native']['seconds']:9.2f}"
        f"{rates['native']:12,.0f}{result['native']['cpu_seconds']:8.1f}",
        f"{'  median of runs taking':<44}"
        + ", ".join(f"{seconds:.2f}" for seconds in result["native"].get("all_seconds", [])),
        f"{'goaccess: COMBINED -> JSON report':<44}{result['goaccess']['seconds']:9.2f}"
        f"{rates['goaccess']:12,.0f}{result['goaccess']['cpu_seconds']:8.1f}",
        "",
    ]
    out += [
        "* when ecstatic_intake_rows_inserted_total reached the lines sent, counted only "
        "once the stats API",
        "  then found every site's rows exact (a sweep of every site is too coarse a clock)",
        "",
    ]
    for name, entry in ratios.items():
        verdict = "met" if entry["met"] else "NOT met"
        out.append(
            f"intake / {name:<9} {_fmt(entry['ratio'], '7.3f')}x   goal >= "
            f"{entry['goal']}x: {verdict}"
        )
    stages = intake["stages"]
    total = sum(stages.values())
    wall = _intake_seconds(intake) or 0.0
    out += ["", "per-stage thread seconds (ecstatic_intake_stage_seconds_total, delta):"]
    if not stages:
        out.append("  (no stage samples: this intake does not fill the metric)")
    for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        out.append(
            f"  {stage:<14}{seconds:9.2f} s {100 * seconds / total:6.1f} %"
            f"{1e6 * seconds / lines:9.2f} us/line"
            + (f"{100 * seconds / wall:7.1f} % of the wall time" if wall else "")
        )
    mem = intake["memory"]
    if mem:
        out += [
            "",
            "RSS of the intake+query process tree (every 100 ms), MiB: "
            f"start {mem['start_mib']:.0f}, 1/4 {mem['quarter_mib']:.0f}, "
            f"middle {mem['middle_mib']:.0f}, 3/4 {mem['three_quarters_mib']:.0f}, "
            f"end {mem['end_mib']:.0f}, peak {mem['peak_mib']:.0f}",
        ]
    invalid = intake["invalid"]
    out += [
        "",
        f"invalid lines (ecstatic_intake_lines_invalid_total): {int(sum(invalid.values())):,}"
        + (f" {dict(sorted(invalid.items()))}" if invalid else ""),
        f"counts: stats API {intake['counted']:,} of {lines:,} ({intake['sweeps']} sweeps); "
        f"native {result['native']['rows']:,}; goaccess valid "
        f"{result['goaccess']['valid_requests']:,}",
    ]
    if intake["error"]:
        out.append(f"INTAKE RUN INCOMPLETE: {intake['error']}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="ecstatic-bench-intake-"))
    try:
        result = run(args, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(text(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Push-to-live time of deploys, as ratios to a plain ``git push`` of the same commits.

Starts a real local stack (``ecstatic up`` in a temporary ECSTATIC_HOME on free ports,
through ``tests/e2e/stackdriver.py``), creates a user, then for each of ``--repeat``
rounds, a fresh site and a fresh bare repository:

1. ``site_first``     a generated site (``--files`` files, ``--megabytes`` MB of seeded
                      random bytes over a few directories) pushed to the stack: seconds
                      from starting ``git push`` until Caddy serves the new ``marker.txt``;
                      beside it the same commit pushed to a bare repository over file://.
2. ``site_change``    the next commit (only ``marker.txt`` changed), the same way.
3. ``hugo_first``     a small Hugo site, built by the pipeline (``hugo --minify`` in the
                      bubblewrap sandbox), until a page shows the commit's marker text;
                      the build's own seconds come from the deploy record's step_seconds.
4. ``hugo_change``    the next commit (one content file changed), the same way.
5. ``bunny_first`` / ``bunny_change``: the two commits' trees deployed in-process through
                      ``BunnyReleases`` (``stage`` + ``activate``) to the local Bunny double
                      (``tests/cdn/bunny_double.py``): seconds and the PUTs the double saw.

Every ratio is ``median(stack seconds) / median(plain push seconds)`` from the same run,
so it tracks the code, not the (shared, noisy, 2-core) machine. The goals (first push
<= 1.5x, one-file change <= 3x) are printed beside what was measured; nothing asserts.

    .venv/bin/python bench/deploy.py [--files N] [--megabytes M] [--hugo-pages P]
        [--repeat R] [--seed S] [--no-stack] [--no-hugo] [--no-bunny] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a folder of scripts; tests/ holds the drivers
    sys.path.insert(0, str(ROOT))

from services.cdn.bunny import BunnyCDN  # noqa: E402
from services.cdn.bunny_releases import BunnyReleases  # noqa: E402
from services.cdn.bunny_storage import BunnyStorage  # noqa: E402
from services.cdn.local import LocalCDN  # noqa: E402
from tests.cdn.bunny_double import BunnyDouble  # noqa: E402

MARKER = "marker.txt"
HUGO_MARKED = "content/posts/post-000.md"  # the file the Hugo site's second commit changes
HUGO_PAGE = "/posts/post-000/"
GOALS = {"site_first": 1.5, "site_change": 3.0, "hugo_first": None, "hugo_change": None}
_DIRS = ["", "css", "js", "img", "img/photos", "blog/2024", "blog/2025", "docs/guide"]
_IDENTITY = ("-c", "user.name=Bench", "-c", "user.email=bench@example.com")


# -- sites and repositories ---------------------------------------------------------


def make_site(root: Path, files: int, total_bytes: int, seed: int) -> Path:
    """``files`` files (``marker.txt`` among them) of seeded random bytes, ~``total_bytes``.

    Sizes vary (a few large "images", many small pages); random bytes do not compress,
    so git sends about ``total_bytes`` in the first pack.
    """
    if files < 2:
        raise ValueError("a site needs at least 2 files (one of them the marker)")
    rng = random.Random(seed)
    weights = [rng.paretovariate(1.5) for _ in range(files - 1)]
    scale = total_bytes / sum(weights)
    root.mkdir(parents=True, exist_ok=True)
    for n, weight in enumerate(weights):
        directory = root / _DIRS[n % len(_DIRS)]
        directory.mkdir(parents=True, exist_ok=True)
        suffix = ".jpg" if weight > 4 else ".html"
        (directory / f"file-{n:04d}{suffix}").write_bytes(
            rng.randbytes(max(1, int(weight * scale)))
        )
    (root / MARKER).write_bytes(marker(1))
    return root


def marker(version: int) -> bytes:
    return f"marker version {version}\n".encode()


def make_hugo_site(root: Path, pages: int, seed: int) -> Path:
    """A small Hugo site: a base layout, a list, and ``pages`` posts of seeded text."""
    rng = random.Random(seed)
    words = ["static", "site", "deploy", "edge", "cache", "git", "push", "build", "page", "live"]
    files = {
        "hugo.toml": 'baseURL = "http://example.localhost/"\ntitle = "Bench blog"\n'
        'disableKinds = ["taxonomy", "term", "RSS", "sitemap"]\n',
        "layouts/_default/baseof.html": "<!doctype html>\n<html><head><title>{{ .Title }}"
        '</title></head>\n<body>{{ block "main" . }}{{ end }}</body></html>\n',
        "layouts/_default/single.html": '{{ define "main" }}<article>{{ .Content }}'
        "</article>{{ end }}\n",
        "layouts/_default/list.html": '{{ define "main" }}{{ range .Pages }}'
        '<a href="{{ .RelPermalink }}">{{ .Title }}</a>{{ end }}{{ end }}\n',
        "layouts/index.html": '{{ define "main" }}<h1>{{ .Site.Title }}</h1>'
        '{{ range .Site.RegularPages }}<a href="{{ .RelPermalink }}">{{ .Title }}</a>'
        "{{ end }}{{ end }}\n",
    }
    for n in range(pages):
        text = " ".join(rng.choice(words) for _ in range(300))
        files[f"content/posts/post-{n:03d}.md"] = f'---\ntitle: "Post {n}"\n---\n\n{text}\n'
    files[HUGO_MARKED] = files[HUGO_MARKED].replace("\n\n", "\n\nhugo-marker-1\n\n", 1)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    from tests.e2e.stackdriver import git as run_git  # one way to run git, without prompts

    result = run_git(cwd, *args, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args[:2])} failed:\n{result.stderr[-2000:]}")
    return result


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, *_IDENTITY, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def make_repo(repo: Path, change: Callable[[Path], None]) -> list[str]:
    """Commit the tree already in ``repo``, apply ``change``, commit again: both shas."""
    git(repo, "init", "-q", "-b", "main")
    first = commit_all(repo, "site")
    change(repo)
    return [first, commit_all(repo, "one file changed")]


def checkout_tree(repo: Path, sha: str, target: Path) -> Path:
    """The commit's files (without ``.git``) in ``target``."""
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", sha], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def push(repo: Path, url: str, sha: str) -> float:
    """Seconds of one ``git push url sha:refs/heads/main`` (a plain push: the baseline)."""
    start = time.perf_counter()
    git(repo, "push", "-q", url, f"{sha}:refs/heads/main")
    return time.perf_counter() - start


# Between two checks of the served file. Each check is an HTTP request to Caddy, so a
# coarse interval adds up to its own length to every live time measured (10 ms once: a
# quarter of a one-file change's); at 2 ms the checks cost little CPU beside the deploy.
POLL_SECONDS = 0.002


def push_to_live(
    repo: Path, url: str, sha: str, served: Callable[[], bool], timeout: float = 300.0
) -> tuple[float, float]:
    """``(seconds until served() is true, seconds until git push returned)``.

    ``served`` is polled from the moment ``git push`` starts, so a site that goes live
    before the push's last ``remote:`` lines arrive is timed when it goes live.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "HOME": str(repo)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["git", "push", "-q", url, f"{sha}:refs/heads/main"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    live = None
    try:
        while live is None:
            if served():
                live = time.perf_counter() - start
            elif proc.poll() is not None and proc.returncode != 0:
                raise RuntimeError(f"git push failed: {proc.stderr.read().decode()[-2000:]}")
            elif time.perf_counter() - start > timeout:
                raise RuntimeError(f"not live within {timeout}s")
            else:
                time.sleep(POLL_SECONDS)
        proc.wait(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"git push failed: {proc.stderr.read().decode()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    return live, time.perf_counter() - start


# -- measurements -------------------------------------------------------------------


def _served(base: str, host: str, path: str, wanted: Callable[[bytes], bool]) -> Callable:
    session = requests.Session()

    def check() -> bool:
        try:
            answer = session.get(base + path, headers={"Host": host}, timeout=5)
        except requests.RequestException:
            return False
        return answer.status_code == 200 and wanted(answer.content)

    return check


def measure_stack_site(
    stack, token: str, repo: Path, shas: Sequence[str], name: str, check, work: Path
) -> dict:
    """One round: a new site and a new bare repository, both commits pushed to each.

    ``check(version)`` gives ``(path, predicate on the body)`` for commit ``version``.
    """
    created = stack.api("POST", "/v1/sites", token, json={"name": name})
    if created.status_code != 201:
        raise RuntimeError(f"site creation failed: {created.status_code} {created.text}")
    site = created.json()
    host = site["hostnames"][0]
    scheme, rest = site["git_url"].split("://", 1)
    remote = f"{scheme}://bench:{token}@{rest}"
    bare = work / f"{name}.git"
    git(work, "init", "-q", "--bare", str(bare))
    round_ = {}
    for label, version, sha in (("first", 1, shas[0]), ("change", 2, shas[1])):
        baseline = push(repo, bare.as_uri(), sha)
        path, wanted = check(version)
        live, returned = push_to_live(repo, remote, sha, _served(stack.base, host, path, wanted))
        deploys = stack.api("GET", f"/v1/sites/{site['id']}/deploys", token).json()["deploys"]
        record = next(d for d in deploys if d["commit_sha"] == sha)
        if record["state"] != "live":
            raise RuntimeError(f"deploy of {sha[:7]} is {record['state']}: {record}")
        round_[label] = {
            "live_seconds": live,
            "push_returned_seconds": returned,
            "baseline_seconds": baseline,
            "step_seconds": record.get("step_seconds") or {},
            "file_count": record.get("file_count"),
            "bytes": record.get("bytes"),
        }
    return round_


def measure_bunny(v1: Path, v2: Path, work: Path) -> dict:
    """Both trees deployed through ``BunnyReleases`` to a fresh in-process Bunny double."""
    zone, key = "bench", "bench-storage-password"
    result = {}
    with BunnyDouble() as double:
        double.add_zone(zone, key)
        storage = BunnyStorage(zone, key, double.storage_host, scheme="http", pool_size=8)
        # The same parts as services.git.app._backend builds, on the double's http host.
        releases = BunnyReleases(LocalCDN(work / "cdn"), BunnyCDN(storage, workers=8))
        try:
            for label, number, tree in (("first", 1, v1), ("change", 2, v2)):
                release = f"{number:08d}-bench"
                double.clear_log()
                start = time.perf_counter()
                releases.stage("bench-site", release, tree)
                staged = time.perf_counter()
                activated = releases.activate("bench-site", ["bench.localhost"], release)
                end = time.perf_counter()
                result[label] = {
                    "seconds": end - start,
                    "stage_seconds": staged - start,
                    "activate_seconds": end - staged,
                    "puts": len(double.matching("PUT")),
                    "deletes": len(double.matching("DELETE")),
                    "uploaded": activated.uploaded,
                    "bytes_uploaded": activated.bytes_uploaded,
                }
        finally:
            storage.close()
    return result


def _median(rounds: list[dict], label: str, key: str) -> float:
    return statistics.median(r[label][key] for r in rounds)


def summarize_stack(rounds: list[dict], prefix: str) -> dict:
    out = {}
    for label in ("first", "change"):
        name = f"{prefix}_{label}"
        live = _median(rounds, label, "live_seconds")
        baseline = _median(rounds, label, "baseline_seconds")
        steps = {
            step: statistics.median(r[label]["step_seconds"].get(step, 0.0) for r in rounds)
            for step in ("checkout", "build", "publish", "activate", "record")
        }
        out[name] = {
            "live_seconds": live,
            "baseline_seconds": baseline,
            "ratio": live / baseline,
            "goal": GOALS[name],
            "push_returned_seconds": _median(rounds, label, "push_returned_seconds"),
            "step_seconds": steps,
            "ratios_per_round": [
                r[label]["live_seconds"] / r[label]["baseline_seconds"] for r in rounds
            ],
            "file_count": rounds[0][label]["file_count"],
            "bytes": rounds[0][label]["bytes"],
        }
    return out


def summarize_bunny(rounds: list[dict]) -> dict:
    out = {}
    for label in ("first", "change"):
        entry = {key: _median(rounds, label, key) for key in rounds[0][label]}
        for key in ("puts", "deletes", "uploaded", "bytes_uploaded"):
            entry[key] = int(entry[key])
        out[f"bunny_{label}"] = entry
    return out


def measure(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ecstatic-bench-deploy-"))
    # The build sandbox runs as an unprivileged uid: it must be able to search the path.
    work.chmod(0o711)
    all_runs: dict[str, list] = {}
    measurements: dict[str, dict] = {}
    try:
        v1 = make_site(work / "v1", args.files, int(args.megabytes * 2**20), args.seed)
        site_bytes = sum(p.stat().st_size for p in v1.rglob("*") if p.is_file())
        repo = Path(shutil.copytree(v1, work / "repo"))
        shas = make_repo(repo, lambda r: (r / MARKER).write_bytes(marker(2)))
        v2 = checkout_tree(repo, shas[1], work / "v2")

        if not args.no_stack:
            from tests.e2e.stackdriver import running_stack

            home = work / "home"
            home.mkdir(mode=0o711)
            hugo = None
            if not args.no_hugo:
                hugo = make_hugo_site(work / "hugo", args.hugo_pages, args.seed)
                hugo_shas = make_repo(
                    hugo,
                    lambda r: (r / HUGO_MARKED).write_text(
                        (r / HUGO_MARKED).read_text().replace("hugo-marker-1", "hugo-marker-2")
                    ),
                )
            with running_stack(home) as stack:
                token = stack.create_user("bench")
                site_rounds, hugo_rounds = [], []
                for n in range(args.repeat):
                    site_rounds.append(
                        measure_stack_site(
                            stack,
                            token,
                            repo,
                            shas,
                            f"bench-{n}",
                            lambda v: (f"/{MARKER}", lambda body, v=v: body == marker(v)),
                            work,
                        )
                    )
                    if hugo is not None:
                        hugo_rounds.append(
                            measure_stack_site(
                                stack,
                                token,
                                hugo,
                                hugo_shas,
                                f"hugo-{n}",
                                lambda v: (
                                    HUGO_PAGE,
                                    lambda body, v=v: f"hugo-marker-{v}".encode() in body,
                                ),
                                work,
                            )
                        )
            all_runs["site"] = site_rounds
            measurements.update(summarize_stack(site_rounds, "site"))
            if hugo_rounds:
                all_runs["hugo"] = hugo_rounds
                measurements.update(summarize_stack(hugo_rounds, "hugo"))

        if not args.no_bunny:
            bunny_rounds = [measure_bunny(v1, v2, work / f"bunny-{n}") for n in range(args.repeat)]
            all_runs["bunny"] = bunny_rounds
            measurements.update(summarize_bunny(bunny_rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "config": {
            "files": args.files,
            "megabytes": args.megabytes,
            "site_bytes": site_bytes,
            "hugo_pages": args.hugo_pages,
            "repeat": args.repeat,
            "statistic": "median",
            "seed": args.seed,
            "timer": "time.perf_counter",
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "baseline": "git push of the same commit to a bare repository over file://",
        "measurements": measurements,
        "all_runs": all_runs,
    }


# -- output -------------------------------------------------------------------------

_LABELS = {
    "site_first": "site: first push -> live",
    "site_change": "site: one-file change -> live",
    "hugo_first": "hugo: first push -> live",
    "hugo_change": "hugo: one-file change -> live",
    "bunny_first": "bunny double: first deploy",
    "bunny_change": "bunny double: one-file change",
}


def table(result: dict) -> str:
    config = result["config"]
    out = [
        f"deploys: {config['files']} files ({config['megabytes']} MB), Hugo {config['hugo_pages']}"
        f" pages, median of {config['repeat']}, Python {config['python']}, {config['cpus']} CPUs,"
        f" load {config['load_average'][0]:.1f}",
        f"{'measurement':<32}{'live s':>9}{'plain s':>9}{'ratio':>8}{'goal':>7}"
        f"{'build s':>9}{'push s':>9}",
    ]
    for name, entry in result["measurements"].items():
        if name.startswith("bunny"):
            continue
        goal = f"{entry['goal']:.1f}x" if entry["goal"] else "-"
        build = entry["step_seconds"]["build"]
        out.append(
            f"{_LABELS[name]:<32}{entry['live_seconds']:>9.3f}{entry['baseline_seconds']:>9.3f}"
            f"{entry['ratio']:>7.2f}x{goal:>7}{build:>9.3f}{entry['push_returned_seconds']:>9.3f}"
        )
    bunny = [n for n in result["measurements"] if n.startswith("bunny")]
    if bunny:
        out.append(
            f"{'':<32}{'total s':>9}{'stage s':>9}{'sync s':>8}{'PUTs':>7}"
            f"{'DELETEs':>9}{'MB up':>9}"
        )
        for name in bunny:
            e = result["measurements"][name]
            out.append(
                f"{_LABELS[name]:<32}{e['seconds']:>9.3f}{e['stage_seconds']:>9.3f}"
                f"{e['activate_seconds']:>8.3f}{e['puts']:>7}{e['deletes']:>9}"
                f"{e['bytes_uploaded'] / 2**20:>9.2f}"
            )
    out.append(
        "live s: from starting git push until Caddy serves the new content; plain s: git push"
        " of the same commit to a bare repo over file://; ratio = live / plain (medians, same"
        " run); build s: the deploy record's step_seconds; push s: until git push returned"
    )
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--files", type=int, default=1000, help="files of the generated site")
    parser.add_argument("--megabytes", type=float, default=20.0, help="its total size in MiB")
    parser.add_argument("--hugo-pages", type=int, default=20, help="posts of the Hugo site")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median counts")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated sites")
    parser.add_argument("--no-stack", action="store_true", help="skip the local stack (and Hugo)")
    parser.add_argument("--no-hugo", action="store_true", help="skip the Hugo site")
    parser.add_argument("--no-bunny", action="store_true", help="skip the Bunny double")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.files < 2 or args.repeat < 1 or args.hugo_pages < 1 or args.megabytes <= 0:
        parser.error("need --files >= 2, --repeat >= 1, --hugo-pages >= 1, --megabytes > 0")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(args)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

"""One benchmark at two revisions in the same run: what a change costs, beside the figures before.

    .venv/bin/python -m bench.revisions --base REV [--runs 3] -- BENCH [BENCH ARGS...]
    e.g. .venv/bin/python -m bench.revisions --base b07ff1f -- idle_cost --nodes 10 --no-serf

The base revision is checked out into a temporary git worktree; `python -m bench.BENCH ARGS
--json FILE` runs there and in this checkout, alternately (base, this, base, this, ...) `--runs`
times, so that both see the same machine at nearly the same moments (the machines are shared and
noisy: alternating spreads a slow minute over both). PYTHONPATH points each run at its own tree,
so the agents it starts (detached, from any directory) run that tree's code. Every numeric figure
of the JSON files is printed as the median over runs, beside the base's, with the ratio. The
benchmark chooses what it measures; this only places two revisions side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="swarmlet-base-")) / "tree"
    subprocess.run(
        ["git", "-C", str(HERE), "worktree", "add", "--detach", str(where), rev], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "remove", "--force", str(where)], check=False
        )


def byte_compile(tree: Path) -> None:
    """Compile both trees' modules before the first run, as installing a wheel does: with
    PYTHONDONTWRITEBYTECODE set (these machines set it) an uncompiled tree recompiles every module
    in every process it starts, which is start-up time (join, CLI) no installed release pays."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "swarmlet", "bench"],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_once(tree: Path, bench: list[str], out: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, "-m", f"bench.{bench[0]}", *bench[1:], "--json", str(out)]
    print(f"# {tree}: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, cwd=tree, env=env, check=True)
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


MAX_LIST = 16  # a longer list is a series over time (a run's samples), not a figure


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value, by its path (lists by index; a list longer than
    MAX_LIST is left out: its items are samples whose index means nothing across runs)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list) and len(value) <= MAX_LIST:
        items = enumerate(value)
    else:
        return {}
    found: dict[str, float] = {}
    for key, inner in items:
        found.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return found


def _show(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare with")
    parser.add_argument("--runs", type=int, default=1, help="runs of each revision (alternated)")
    parser.add_argument("--json", help="write both revisions' medians to this file")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- BENCH [ARGS...]")
    args = parser.parse_args()
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    if not bench:
        parser.error("name a benchmark after --, e.g. -- idle_cost --nodes 10")
    results: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    with worktree(args.base) as base_tree, tempfile.TemporaryDirectory() as tmp:
        for tree in (base_tree, HERE):
            byte_compile(tree)
        for i in range(args.runs):
            for label, tree in (("base", base_tree), ("this", HERE)):
                out = Path(tmp) / f"{label}-{i}.json"
                results[label].append(flatten(run_once(tree, bench, out)))
    medians = {
        label: {
            key: statistics.median(run[key] for run in runs if key in run)
            for key in sorted(set().union(*runs))
        }
        for label, runs in results.items()
    }
    print(f"\n{' '.join(bench)}: medians of {args.runs} run(s) each, base = {args.base}")
    print(f"{'figure':<48} {'base':>12} {'this':>12} {'this/base':>10}")
    for key in sorted(set(medians["base"]) | set(medians["this"])):
        b, t = medians["base"].get(key), medians["this"].get(key)
        ratio = f"{t / b:.2f}" if b and t is not None else "-"
        print(f"{key:<48} {_show(b):>12} {_show(t):>12} {ratio:>10}")
    if args.json:
        Path(args.json).write_text(json.dumps({"base": args.base, **medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

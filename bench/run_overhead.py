"""Where a process-worker flow run's start-up goes: every run is a fresh Python process that
imports Prefect, then the flow's module (`entrypoint` in deployments/prefect.yaml), then runs
the engine. Measured in fresh processes, in the same run, next to the references:

- `python -c pass` (the interpreter), `import prefect`,
- an empty Prefect flow run in a fresh process against a temporary Prefect server (start-up,
  API client, flow run and state records: what every run pays whatever its module),
- per flow module: the time of importing it (best of N) and the extra over `import prefect`,
  and which heavy SDKs it loads (IBM, Kubernetes, Dask, trestle, NumPy, rich, and
  the azure-mgmt packages).

    .venv/bin/python bench/run_overhead.py [--repeat 3] [--modules flows.acr,flows.aks]
    .venv/bin/python bench/run_overhead.py --importtime flows.acr   # top packages by self time

Times are CPU seconds of the process (user + system), steady on a busy machine, and wall
seconds. A run's start-up is roughly the empty run plus its module's extra.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
HEAVY = (
    "azure.mgmt.compute",
    "azure.mgmt.network",
    "azure.mgmt.containerservice",
    "azure.mgmt.containerregistry",
    "azure.mgmt.resourcegraph",
    "ibm_boto3",
    "ibm_platform_services",
    "ibm_vpc",
    "SoftLayer",
    "kubernetes",
    "dask",
    "trestle",
    "numpy",
    "rich",
)
EMPTY_RUN = "from prefect import flow\n@flow\ndef empty():\n    pass\nempty()\n"
REPORT = "import sys\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))\n"


def flow_modules() -> list[str]:
    """The modules of every deployment's entrypoint, in file order."""
    found = re.findall(r"entrypoint: (flows\.\w+):", PREFECT_YAML.read_text())
    return list(dict.fromkeys(found))


def run(code: str, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """CPU seconds (user + system: what the run itself costs, steady on a busy machine), wall
    seconds and stdout of `python -c code` in a fresh process at the repository root."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"python -c {code!r} failed ({process.returncode})")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - started, out.strip()


def best(code: str, repeat: int, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """The run of `repeat` with the least CPU time (the least disturbed by other work)."""
    return min(run(code, env) for _ in range(repeat))


def importtime(module: str, top: int = 15) -> None:
    """The packages that cost most (self time, summed per top two name levels)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    costs: collections.Counter[str] = collections.Counter()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            costs[".".join(match[2].split(".")[:2])] += int(match[1])
    for name, micros in costs.most_common(top):
        print(f"{micros / 1e6:7.3f} s  {name}")


def empty_run(repeat: int) -> tuple[float, float, str]:
    """An empty flow run in a fresh process against a temporary Prefect server."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        run(EMPTY_RUN, env)  # the server's first answers are slower: not measured
        return best(EMPTY_RUN, repeat, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modules", help="comma-separated flow modules (default: all)")
    parser.add_argument("--importtime", metavar="MODULE", help="top packages of one module")
    parser.add_argument("--no-empty-run", action="store_true", help="skip the Prefect server")
    args = parser.parse_args()
    if args.importtime:
        importtime(args.importtime)
        return
    modules = args.modules.split(",") if args.modules else flow_modules()
    print(f"{'':32} {'cpu':>6} {'wall':>6}")
    references = [("python -c pass", "pass"), ("import prefect", "import prefect")]
    measured = {name: best(code, args.repeat) for name, code in references}
    if not args.no_empty_run:
        measured["empty flow run"] = empty_run(args.repeat)
    for name, (cpu, wall, _) in measured.items():
        print(f"{name:32} {cpu:5.2f}s {wall:5.2f}s")
    prefect = measured["import prefect"][0]
    print(f"\n{'flow module':32} {'cpu':>6} {'wall':>6} {'+prefect':>8}  heavy SDKs loaded")
    for module in modules:
        cpu, wall, heavy = best(f"import {module}\n" + REPORT.format(heavy=HEAVY), args.repeat)
        print(f"{module:32} {cpu:5.2f}s {wall:5.2f}s {cpu - prefect:+7.2f}s  {heavy or '-'}")


if __name__ == "__main__":
    main()

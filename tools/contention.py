"""How much a chapter's training slows down when another torch process shares the machine.

    python tools/contention.py                 # every setting below, 3 repeats each
    python tools/contention.py --settings spin spin-1k --alone

A worker trains one run of Part II's protocol (TinyNet + CBAM, seed 0, the chapters' budget)
a few times and prints its median wall time. Each setting is measured alone and as two
workers started together (a reader's notebook beside another notebook, a build or a test run),
with the environment the setting names. Speed figures are machine-dependent, so they live
here, never in the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {
    # name: environment of each worker
    "spin": {},  # torch's defaults: as many threads as cores, OpenMP threads spin while waiting
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},  # OpenMP threads sleep at once when idle
    "spin-10k": {"GOMP_SPINCOUNT": "10000"},  # spin 10,000 iterations (default 300,000), then sleep
    "spin-1k": {"GOMP_SPINCOUNT": "1000"},  # the Makefile's default for book, test and lab
    "one-thread": {"OMP_NUM_THREADS": "1"},
}

WORKER = r"""
import os, statistics, sys, time
import torch
from attncourse import experiments
from attncourse.train import fit
p = experiments.protocol("hybrid")
data = p.data()
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter()
    fit(p.network("CBAM (r=4)"), data, seed=0, track=False, progress=False, **p.fit_kwargs())
    times.append(time.perf_counter() - t)
print(statistics.median(times), torch.get_num_threads(), flush=True)
"""


def run(env_extra: dict[str, str], workers: int, repeats: int) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k not in {"OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}}
    env.update(env_extra)
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(repeats)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    return [float(p.communicate()[0].split()[0]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alone", action="store_true", help="measure each setting alone only")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; median seconds of one training run (Part II protocol, CBAM, seed 0)\n")
    print(f"{'setting':<12} {'alone':>8} {'beside another':>16} {'slowdown':>9}")
    for name in args.settings:
        alone = run(SETTINGS[name], 1, args.repeats)[0]
        if args.alone:
            print(f"{name:<12} {alone:>8.2f}", flush=True)
            continue
        pair = max(run(SETTINGS[name], 2, args.repeats))
        print(f"{name:<12} {alone:>8.2f} {pair:>16.2f} {pair / alone:>8.1f}x", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench.py - the prototype beside the peers and kpool under kpbench.

Rounds alternate the allocators (each round runs every allocator once, in a
rotated order), and the table gives the median ops_per_cpu_s of each.
Run from allocator/: python3 proto/bench.py [rounds] [workloads] [allocators, comma-separated]
(kpool-outline: kpool's pool with layout:outline, the prototype's design inside libkpool.)
"""

import json
import os
import statistics
import subprocess
import sys

LIB = "/usr/lib/x86_64-linux-gnu"
KPBENCH = "build/release/kpbench"
ALLOCS = {
    "proto": "proto/build/libproto.so",
    "proto-aes": "proto/build/libproto-aes.so",
    "proto-nocanary": "proto/build/libproto-nocanary.so",
    "proto-nodfree": "proto/build/libproto-nodfree.so",
    "proto-noptr": "proto/build/libproto-noptr.so",
    "proto-off": "proto/build/libproto-off.so",
    "mimalloc": f"{LIB}/libmimalloc.so.2",
    "tcmalloc": f"{LIB}/libtcmalloc_minimal.so.4",
    "jemalloc": f"{LIB}/libjemalloc.so.2",
    "glibc": None,
    "kpool": "kpool",
    "kpool-outline": "kpool:layout:outline",
}


def run(name: str, wl: str) -> dict:
    lib = ALLOCS[name]
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    kpool = lib is not None and lib.startswith("kpool")
    cmd = [KPBENCH, "--alloc", "kpool" if kpool else "malloc", "--workload", wl, "--json"]
    if lib and lib.startswith("kpool:"):
        cmd += ["--conf", lib.split(":", 1)[1]]
    if lib and not kpool:
        env["LD_PRELOAD"] = lib
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    d = json.loads(out.splitlines()[0])
    assert d["verify_errors"] == 0 and d["alloc_failures"] == 0, (name, wl, d)
    return d


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    wls = sys.argv[2] if len(sys.argv) > 2 else "ab"
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(ALLOCS)
    res: dict = {(n, w): [] for n in names for w in wls}
    rss: dict = {(n, w): [] for n in names for w in wls}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for w in wls:
            for n in order:
                d = run(n, w)
                res[n, w].append(d["ops_per_cpu_s"] / 1e6)
                rss[n, w].append(d["rss"]["hwm_kib"])
    print(json.dumps({f"{n} {w}": v for (n, w), v in res.items()}))
    print(f"median of {rounds} alternated rounds, ops_per_cpu_s in millions (min-max), VmHWM MiB")
    for w in wls:
        mi = statistics.median(res["mimalloc", w])
        peers = [p for p in ("mimalloc", "tcmalloc", "jemalloc", "glibc") if p in names]
        best = max(statistics.median(res[p, w]) for p in peers)
        print(f"\nworkload {w}: best peer {best:.1f}M")
        print("| allocator | M ops/cpu-s | min-max | x mimalloc | x best peer | VmHWM MiB |")
        print("|---|---|---|---|---|---|")
        for n in names:
            v = res[n, w]
            m = statistics.median(v)
            h = statistics.median(rss[n, w]) / 1024
            print(f"| {n} | {m:.1f} | {min(v):.1f}-{max(v):.1f} | {m / mi:.2f} | {m / best:.2f} | {h:.1f} |")


if __name__ == "__main__":
    main()

"""The preload library on a pool of layout:outline (allocator/src/outline.c), chosen by KPOOL_CONF as any pool
option: the conformance suite gives glibc's results, the traps pass, an integrity error aborts with the
preload's one line in free()'s name, and a real program (sqlite3, when installed) prints what it prints on
glibc. The same programs as tests/test_preload.py, whose fixtures this reuses."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from test_preload import ABORT_LINE, DATA, run

from harness import build

OUTLINE = {"KPOOL_CONF": "layout:outline"}


@pytest.fixture(scope="module")
def preload() -> Path:
    return build.preload_library()


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """conformance.c and traps.c of tests/data/preload, compiled as tests/test_preload.py compiles them."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("outline-programs")
    built = {}
    for name in ("conformance", "traps"):
        exe = out / name
        subprocess.run(
            [cc, "-O0", "-fno-builtin", "-pthread", "-Wall", "-Wno-alloc-size-larger-than", "-o", str(exe),
             str(DATA / f"{name}.c")],
            check=True,
        )  # fmt: skip
        built[name] = exe
    return built


def test_conformance_suite_gives_glibc_results_on_outline(programs: dict[str, Path], preload: Path) -> None:
    glibc = run([str(programs["conformance"])], None)
    kpool = run([str(programs["conformance"])], preload, OUTLINE)
    assert glibc.returncode == 0, glibc.stderr
    assert kpool.returncode == 0, kpool.stderr
    assert kpool.stdout.splitlines() == glibc.stdout.splitlines()
    assert kpool.stderr == ""


# Not traps' fork case: test_preload.py runs it on both layouts (the daemon running in the parent: an
# outline pool's starts at 1 MiB in use, kp__ol_wanted). test_outline_integrity's test_fork forks.
@pytest.mark.parametrize(("trap", "says"), [("early", "early blocks: ok")])
def test_traps_pass_on_outline(programs: dict[str, Path], preload: Path, trap: str, says: str) -> None:
    proc = run([str(programs["traps"]), trap], preload, OUTLINE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert says in proc.stdout


@pytest.mark.parametrize(("trap", "event"), [("double-free", "double_free"), ("bad-free", "invalid_free")])
def test_an_integrity_error_aborts_with_one_line_in_free(
    programs: dict[str, Path], preload: Path, trap: str, event: str
) -> None:
    proc = run([str(programs["traps"]), trap], preload, OUTLINE)
    assert proc.returncode == -signal.SIGABRT, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    m = ABORT_LINE.match(lines[0])
    assert m, lines[0]
    assert (m["event"], m["call"], m["then"]) == (event, "free()", "abort")


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="no sqlite3")
def test_sqlite3_prints_what_it_prints_on_glibc(preload: Path, tmp_path: Path) -> None:
    sql = (
        "create table t(a integer primary key, b text);\n"
        "with recursive c(x) as (select 1 union all select x + 1 from c where x < 20000)\n"
        "  insert into t select x, printf('%08d-%x', x * 7919 % 100003, x) from c;\n"
        "create index tb on t(b);\n"
        "select count(*), sum(a), min(b), max(b) from t;\n"
        "delete from t where a % 3 = 0;\n"
        "vacuum;\n"
        "select count(*), sum(length(b)) from t;\n"
        "pragma integrity_check;\n"
    )
    out = {}
    for name, env in (("glibc", {}), ("outline", {**OUTLINE, "LD_PRELOAD": str(preload)})):
        full = {"PATH": "/usr/bin:/bin", "LANG": "C", **env}
        db = tmp_path / f"{name}.db"
        proc = subprocess.run(
            ["sqlite3", str(db)],
            input=sql,
            env=full,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        out[name] = proc.stdout
    assert out["outline"] == out["glibc"]
    assert out["glibc"].rstrip().endswith("ok")


GIVE_BACK_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r"); char l[256]; long v = 0;
    while (fgets(l, sizeof l, f)) if (!strncmp(l, "VmRSS:", 6)) v = atol(l + 6);
    fclose(f); return v;
}
int main(void) {
    enum { N = 256 * 1024 };
    static void *p[N];
    for (int i = 0; i < N; i++) { p[i] = malloc(256); memset(p[i], 1, 256); }
    long held = rss_kib();
    for (int i = 0; i < N; i++) free(p[i]);
    long after = held;
    for (int s = 0; s < 50 && after > held / 4; s++) { usleep(100000); after = rss_kib(); }
    printf("%ld %ld\n", held, after);
    return 0;
}
"""


def test_freed_memory_goes_back_on_outline(preload: Path, tmp_path: Path) -> None:
    """64 MiB of 256-byte blocks malloc'd and freed: within 5 s (decay_ms is 1 s) the preload's daemon,
    started once the outline pool maps a second segment, gives the spans' pages back. On f7c69a5 the
    resident set stayed at 91 MiB (no daemon, no purge); now about 9 MiB (the spans' records stay)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    (tmp_path / "give_back.c").write_text(GIVE_BACK_C)
    exe = tmp_path / "give_back"
    subprocess.run([cc, "-O1", "-o", str(exe), str(tmp_path / "give_back.c")], check=True)
    proc = run([str(exe)], preload, OUTLINE)
    assert proc.returncode == 0, proc.stderr
    held, after = (int(x) for x in proc.stdout.split())
    assert held > 64 << 10, proc.stdout
    assert after <= held // 4, f"resident {held} KiB with 64 MiB held, {after} KiB 5 s after its frees"

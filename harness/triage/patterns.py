"""Triage patterns: data, not code. Each regex has an example line beside it.

Four tables, read top to bottom by `signature.py`:

- KIND_RULES: what kind of crash a text shows. The first rule that matches anywhere in the text wins, so the
  order is a priority: a sanitizer's own bug type beats the signal it raised, an assertion beats the abort it
  called, a Python exception beats libFuzzer's "fuzz target exited".
- FRAME_RULES: lines that are stack frames (sanitizer symbolized frames, gdb, glibc backtrace_symbols, Python
  tracebacks and faulthandler dumps).
- SKIP_RULES: frames that say nothing about the bug (sanitizer runtime, libc abort machinery, libFuzzer,
  atheris, the Python interpreter, the harness). A "soft" rule is dropped again when it would leave no frame
  at all: a Python exception raised inside the harness is still best named by its harness frames. A frame
  without a function name (`module+0x1a2b` only) is soft-skipped too: its offset changes with every build.
- CLEANUPS: rewrites that make a function name stable across builds (templates, clones, offsets).

A new rule arrives with the trace that prompted it (tests/data/traces/), and tests/test_triage_patterns.py
checks that every example below matches its own rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KindRule:
    """`kind` and `detail` are templates over the regex's named groups (str.format)."""

    name: str
    regex: re.Pattern[str]
    kind: str
    example: str
    detail: str = ""
    last: bool = False  # use the last match in the text, not the first (chained Python exceptions)
    weak: bool = False  # only when neither the producer's guess nor a signal names the kind
    # A template of the frame the verdict names (an oracle's "in kp_alloc"): the signature's only frame,
    # in place of the stack, which shows the path that led to the check rather than the bug.
    frame: str = ""


@dataclass(frozen=True)
class FrameRule:
    """Named groups: func (may be absent), file, line, module. `order` is "innermost-first" or
    "outermost-first"."""

    name: str
    regex: re.Pattern[str]
    example: str
    order: str = "innermost-first"


@dataclass(frozen=True)
class SkipRule:
    """Matched against one field of a frame: "func", "file" or "module"."""

    field: str
    regex: re.Pattern[str]
    example: str
    soft: bool = False


@dataclass(frozen=True)
class Cleanup:
    regex: re.Pattern[str]
    replacement: str
    example: str
    expected: str


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.MULTILINE)


_ASAN_TYPES = (
    "heap-use-after-free|heap-buffer-overflow|stack-buffer-overflow|stack-buffer-underflow|"
    "global-buffer-overflow|dynamic-stack-buffer-overflow|stack-use-after-return|stack-use-after-scope|"
    "use-after-poison|container-overflow|double-free|alloc-dealloc-mismatch|new-delete-type-mismatch|"
    "memcpy-param-overlap|negative-size-param|stack-overflow|unknown-crash|odr-violation|"
    "allocation-size-too-big|calloc-overflow|pvalloc-overflow|reallocarray-overflow|"
    "invalid-allocation-alignment|invalid-aligned-alloc-alignment|invalid-posix-memalign-alignment|"
    "bad-free|out-of-memory|rss-limit-exceeded|allocator-out-of-memory"
)
_KPOOL_VIOLATIONS = "double_free|invalid_free|corruption|overflow|use_after_free|freelist"
# "%p size %zu: ", "%p size class %zu: " (a double free) or "%p size unknown: " before the text (integrity.c)
_KPOOL_ADDR = r"(?:0x[0-9a-f]+ size (?:class \d+|\d+|unknown): )?"
# A line of the preload's that names an integrity error (harness.triage.signature.with_pool_events)
KPOOL_VIOLATION_LINE = re.compile(rf"(?:^|\s)kpool \d+\.\d+ (?:{_KPOOL_VIOLATIONS}) ", re.MULTILINE)
_KPOOL_OTHER_EVENTS = "quarantine|oom|bad_size"  # the pool contained it or refused a request: weak evidence

# Signals by number (Linux x86-64 and arm64 agree on these) and the names sanitizers print for them.
SIGNALS = {
    4: "SIGILL",
    5: "SIGTRAP",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    11: "SIGSEGV",
    15: "SIGTERM",
}
SANITIZER_SIGNALS = {"SEGV": "SIGSEGV", "BUS": "SIGBUS", "FPE": "SIGFPE", "ABRT": "SIGABRT", "ILL": "SIGILL"}
SIGNAL_WORDS = {
    "Segmentation fault": "SIGSEGV",
    "Aborted": "SIGABRT",
    "Bus error": "SIGBUS",
    "Floating point exception": "SIGFPE",
    "Floating-point exception": "SIGFPE",
    "Illegal instruction": "SIGILL",
    "Killed": "SIGKILL",
}
# ThreadSanitizer's prose bug types, as dashed kinds.
TSAN_ALIASES = {
    "data race": "data-race",
    "thread leak": "thread-leak",
    "signal-unsafe call inside of a signal": "signal-unsafe-call",
    "signal handler spoils errno": "signal-handler-spoils-errno",
    "destroy of a locked mutex": "destroy-locked-mutex",
    "unlock of an unlocked mutex": "unlock-unlocked-mutex",
    "double lock of a mutex": "double-lock",
    "use of an invalid mutex": "invalid-mutex",
}
# Kinds whose report holds two racing accesses, each with its stack: signed with both (signature.py).
RACE_KINDS = ("data-race",)
# Kinds whose report may list every thread's stack (allocator/driver/fuzz_stacks.c): signed with the
# threads that were running the input, not with the thread that reported the timeout (threads.py).
HANG_KINDS = ("timeout",)
# The header above each thread's stack in such a report: its tid, its name and what it was doing.
THREAD_HEADER = _re(r'^==kpfuzz== thread (?P<tid>\d+) "(?P<name>[^"\n]*)" (?P<state>[^\n]*)$')
THREAD_HEADER_EXAMPLE = '==kpfuzz== thread 20487 "python3" running the input'
# The state of a thread that was running (a part of) the input when the stacks were taken; of a stress
# worker's op thread when the worker was killed at its time limit (harness/stress/stacks.py).
THREAD_RUNNING = "running the input"
THREAD_RUNNING_WORKLOAD = "running the workload"
THREAD_RUNNING_STATES = (THREAD_RUNNING, THREAD_RUNNING_WORKLOAD)
# The line after the last thread's stack.
THREADS_END = _re(r"^==kpfuzz== end of stacks$")
# ASan words that name a bug type without its dashed name.
ASAN_ALIASES = {"attempting double-free": "double-free", "attempting free on address": "bad-free"}

KIND_RULES: tuple[KindRule, ...] = (
    # -- AddressSanitizer memory bugs (the ERROR line, then the SUMMARY line when the head was cut off) -----
    KindRule(
        "asan-error",
        _re(rf"ERROR: AddressSanitizer: (?:attempting )?(?P<t>{_ASAN_TYPES})\b"),
        "{t}",
        "==9092==ERROR: AddressSanitizer: heap-use-after-free on address 0x604000000090 at pc 0x5654029bceff",
    ),
    KindRule(
        "asan-bad-free",
        _re(r"ERROR: AddressSanitizer: attempting free on address which was not malloc\(\)-ed"),
        "bad-free",
        "==7==ERROR: AddressSanitizer: attempting free on address which was not malloc()-ed: 0x6020000000b0",
    ),
    KindRule(
        "asan-summary",
        _re(rf"SUMMARY: AddressSanitizer: (?P<t>{_ASAN_TYPES})\b"),
        "{t}",
        "SUMMARY: AddressSanitizer: allocation-size-too-big (/usr/lib/libkpool.so+0x1a2b3) in kp_alloc",
    ),
    # -- ThreadSanitizer (its WARNING line names the bug; its own SEGV is a signal, below) ---------------
    KindRule(
        "tsan-warning",
        _re(
            r"WARNING: ThreadSanitizer: (?P<t>data race|lock-order-inversion|heap-use-after-free|thread leak"
            r"|signal-unsafe call inside of a signal|signal handler spoils errno|destroy of a locked mutex"
            r"|unlock of an unlocked mutex|double lock of a mutex|use of an invalid mutex)"
        ),
        "{t}",
        "WARNING: ThreadSanitizer: data race (pid=11603)",
    ),
    # -- LeakSanitizer ------------------------------------------------------------------------------------
    KindRule(
        "lsan",
        _re(r"ERROR: LeakSanitizer: detected memory leaks"),
        "memory-leak",
        "==4242==ERROR: LeakSanitizer: detected memory leaks",
    ),
    # -- UndefinedBehaviorSanitizer, most specific first --------------------------------------------------
    KindRule(
        "ubsan-shift",
        _re(r"runtime error: shift exponent .* is (?:too large|negative)|runtime error: left shift of"),
        "ubsan-invalid-shift",
        "bug.c:11:84: runtime error: shift exponent 70 is too large for 32-bit type 'int'",
    ),
    KindRule(
        "ubsan-overflow",
        _re(r"runtime error: (?:signed integer overflow|unsigned integer overflow|negation of)"),
        "ubsan-integer-overflow",
        "stats.c:40:9: runtime error: signed integer overflow: 2147483647 + 1 cannot be represented",
    ),
    KindRule(
        "ubsan-bounds",
        _re(r"runtime error: index -?\d+ out of bounds"),
        "ubsan-index-out-of-bounds",
        "primary.c:88:12: runtime error: index 64 out of bounds for type 'kp_bin [64]'",
    ),
    KindRule(
        "ubsan-misaligned",
        _re(r"runtime error: (?:load|store|member access|member call).* misaligned address"),
        "ubsan-misaligned-address",
        "alloc.c:52:3: runtime error: store to misaligned address 0x7f3a1c000005 for type 'uint64_t'",
    ),
    KindRule(  # before ubsan-null: pointer arithmetic on NULL, not a dereference
        "ubsan-null-offset",
        _re(r"runtime error: applying (?:non-)?zero offset(?: \d+)? to null pointer"),
        "ubsan-pointer-overflow",
        "alloc.c:70:20: runtime error: applying zero offset to null pointer",
    ),
    KindRule(
        "ubsan-null",
        _re(r"runtime error: .*null pointer"),
        "ubsan-null-dereference",
        "pool.c:30:10: runtime error: member access within null pointer of type 'kp_pool'",
    ),
    KindRule(
        "ubsan-pointer-overflow",
        _re(r"runtime error: (?:pointer index expression|addition of unsigned offset|applying .*offset)"),
        "ubsan-pointer-overflow",
        "alloc.c:70:20: runtime error: pointer index expression with base 0xffffffffffffffff overflowed",
    ),
    KindRule(
        "ubsan-divide",
        _re(r"runtime error: division by zero"),
        "ubsan-divide-by-zero",
        "stats.c:12:17: runtime error: division by zero",
    ),
    KindRule(
        "ubsan-invalid-value",
        _re(r"runtime error: load of value .* which is not a valid value"),
        "ubsan-invalid-value",
        "conf.c:14:7: runtime error: load of value 7, which is not a valid value for type 'bool'",
    ),
    KindRule(
        "ubsan-other",
        _re(r"runtime error: |SUMMARY: UndefinedBehaviorSanitizer"),
        "ubsan-undefined-behavior",
        "SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior bug.c:11:84 in",
    ),
    # -- the fuzz oracle's verdict (allocator/driver/fuzz_model.c, fz_fail): what it saw, in which call --
    KindRule(
        "kpfuzz",
        _re(r"^==kpfuzz== VIOLATION (?P<v>[\w-]+) in (?P<api>\w+) \("),
        "oracle-{v}",
        "==kpfuzz== VIOLATION usable-short in kp_alloc (driver/fuzz_model.c:329): kp_alloc(41) returned 0x7f",
        frame="{api}",
    ),
    # -- kpool's own integrity events (its log lines: "kpool <sec>.<ms> <event> <text>") -------------------
    KindRule(
        "kpool-event",
        # the preload's line ends with what it did next ("; abort", or "; going on" under --on-error log):
        # the run's option, not the bug, so not the detail
        _re(
            rf"(?:^|\s)kpool \d+\.\d+ (?P<ev>{_KPOOL_VIOLATIONS}) {_KPOOL_ADDR}"
            r"(?P<what>[^\n]*?)(?:; (?:abort|going on))?$"
        ),
        "kpool-{ev}",
        "kpool 1718000000.123 double_free 0x7f0a3c001040 size 64: double free",
        detail="{what}",
    ),
    # -- damage a stress worker found without crashing (harness/stress/integrity.py): its first finding ---
    KindRule(
        "integrity",
        _re(r"^kpool: error: integrity (?P<what>[a-z][a-z-]*): "),
        "integrity-{what}",
        "kpool: error: integrity pattern-damage: 2 damaged block(s): thread 0 op 5000, byte 40 of a 80-byte",
    ),
    # -- assert() and abort() -----------------------------------------------------------------------------
    KindRule(
        "assert",
        _re(r"Assertion `(?P<expr>.*)' failed\."),
        "assert",
        'bug: bug.c:12: void kp__verify(int): Assertion `ok && "header tag mismatch"\' failed.',
        detail="{expr}",
    ),
    # -- libFuzzer's own verdicts -------------------------------------------------------------------------
    KindRule(
        "libfuzzer-timeout",
        _re(r"ERROR: libFuzzer: timeout after|SUMMARY: libFuzzer: timeout"),
        "timeout",
        "==1289== ERROR: libFuzzer: timeout after 2 seconds",
    ),
    KindRule(
        "libfuzzer-oom",
        _re(r"ERROR: libFuzzer: out-of-memory|SUMMARY: libFuzzer: out-of-memory"),
        "out-of-memory",
        "==77== ERROR: libFuzzer: out-of-memory (used: 2100Mb; exceeds: 2048Mb)",
    ),
    KindRule(
        "libfuzzer-malloc-limit",
        _re(r"ERROR: libFuzzer: out-of-memory \(malloc\(\d+\)\)"),
        "out-of-memory",
        "==77== ERROR: libFuzzer: out-of-memory (malloc(4294967296))",
    ),
    # -- Python exceptions (atheris prints a traceback; the last unindented "Type: message" line names it) --
    KindRule(
        "python-exception",
        _re(r"^Traceback \(most recent call last\):\n(?:[ \t].*\n)+(?P<type>[A-Za-z_][\w.]*)(?::|$)"),
        "python-exception",
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: bad op byte',
        detail="{type}",
        last=True,
    ),
    # -- signals, as a sanitizer, faulthandler, libFuzzer or a shell reports them ---------------------------
    KindRule(
        "asan-signal",
        _re(r"ERROR: AddressSanitizer: (?P<sig>SEGV|BUS|FPE|ABRT|ILL) on unknown address"),
        "{sig}",
        "==9096==ERROR: AddressSanitizer: SEGV on unknown address 0x000000000010 (pc 0x55ef569f8fc1 T0)",
    ),
    KindRule(
        "python-fatal",
        _re(r"^Fatal Python error: (?P<sig>Segmentation fault|Aborted|Bus error|Floating-point exception)"),
        "{sig}",
        "Fatal Python error: Segmentation fault",
    ),
    KindRule(
        "fatal-signal",
        _re(r"[Ff]atal signal (?P<num>\d+)|caught signal (?P<num2>\d+)"),
        "signal {num}{num2}",
        "Fatal signal 11 (SIGSEGV), code 1 (SEGV_MAPERR), fault addr 0x0",
    ),
    KindRule(
        "libfuzzer-deadly",
        _re(r"ERROR: libFuzzer: deadly signal"),
        "deadly-signal",
        "==31500== ERROR: libFuzzer: deadly signal",
    ),
    KindRule(
        "libfuzzer-exited",
        _re(r"ERROR: libFuzzer: fuzz target exited"),
        "fuzz-target-exited",
        "==31500== ERROR: libFuzzer: fuzz target exited",
    ),
    KindRule(
        "shell-signal",
        _re(r"\d+ (?P<sig>Segmentation fault|Bus error|Floating point exception|Illegal instruction)\s"),
        "{sig}",
        "bash: line 1:  4242 Segmentation fault      (core dumped) ./kpool-worker",
    ),
    # -- the harness's own verdicts (stress runner, campaign) --------------------------------------------
    KindRule(
        "slo",
        _re(r"SLO (?:broken|violated|failed): (?P<slo>[\w.\-]+)"),
        "slo",
        "kpool: SLO broken: p99_alloc_ns: 18250 > 5000",
        detail="{slo}",
        weak=True,
    ),
    KindRule(
        "timeout",
        _re(r"\btimed out\b|=== Timeout:|^kpool: timeout\b"),
        "timeout",
        "kpool: worker 3 timed out after 60 s",
        weak=True,
    ),
    KindRule(
        "kpool-other-event",
        _re(rf"(?:^|\s)kpool \d+\.\d+ (?P<ev>{_KPOOL_OTHER_EVENTS}) {_KPOOL_ADDR}(?P<what>[^\n]*)$"),
        "kpool-{ev}",
        "kpool 1718000000.456 oom 0x0 size 1099511627776: primary and backup exhausted",
        detail="{what}",
        weak=True,
    ),
)

FRAME_RULES: tuple[FrameRule, ...] = (
    # Sanitizer / LLVM symbolizer: "#N 0xADDR in func file:line:col" or "in func (module+0xoff)".
    FrameRule(
        "sanitizer",
        _re(
            r"^\s*#(?P<n>\d+)\s+0x[0-9a-fA-F]+\s+in\s+(?P<func>.+?)"
            r"(?:\s+\((?P<module>[^()\s]+?)\+0x[0-9a-fA-F]+\)(?:\s+\(BuildId: [0-9a-f]+\))?"
            r"|\s+(?P<file>[^\s()]+?)(?::(?P<line>\d+))?(?::\d+)*)?\s*$"
        ),
        "    #0 0x5654029bcefe in kp__central_give /work/kpool/allocator/src/alloc.c:6:77",
    ),
    # ThreadSanitizer (no address): "#N func file:line (module+0xoff)", or "#N func <null> (module+0xoff)".
    FrameRule(
        "tsan",
        _re(
            r"^\s*#(?P<n>\d+)\s+(?P<func>[^\s#(][^()]*?)\s+(?P<file>[^\s()]+?)(?::(?P<line>\d+))?(?::\d+)*"
            r"\s+\((?P<module>[^()\s]+?)\+0x[0-9a-fA-F]+\)"
        ),
        "    #0 partial_push src/primary.c:221 (kpdrive+0x1fe81)",
    ),
    # Sanitizer frame without a symbol: "#N 0xADDR (module+0xoff)".
    FrameRule(
        "sanitizer-nosym",
        _re(r"^\s*#(?P<n>\d+)\s+0x[0-9a-fA-F]+\s+\((?P<module>[^()\s]+?)\+0x[0-9a-fA-F]+\)"),
        "    #5 0x7f8204993304 (/lib/x86_64-linux-gnu/libc.so.6+0x27304)",
    ),
    # gdb: "#1  0x000055555555 in kp_free (p=0x0) at src/alloc.c:12".
    FrameRule(
        "gdb",
        _re(
            r"^#(?P<n>\d+)\s+(?:0x[0-9a-fA-F]+ in )?(?P<func>[\w:~<>.]+) \(.*\)"
            r"(?: at (?P<file>\S+?):(?P<line>\d+))?$"
        ),
        "#1  0x00005555555551a9 in kp_free (pool=0x5555, p=0x0) at allocator/src/alloc.c:412",
    ),
    # glibc backtrace_symbols: "module(func+0x1a)[0xADDR]"; "module(+0x1a)" has no name.
    FrameRule(
        "glibc",
        _re(r"^(?P<module>[^\s()\[\]]+)\((?P<func>[^+()\s]*)\+0x[0-9a-fA-F]+\)\s*\[0x[0-9a-fA-F]+\]"),
        "/usr/lib/libkpool.so(kp__primary_grow+0x1a)[0x7f0a3c0123ab]",
    ),
    # Python traceback (most recent call last).
    FrameRule(
        "python",
        _re(r'^\s+File "(?P<file>[^"]+)", line \d+, in (?P<func>\S+)'),
        '  File "/work/kpool/harness/fuzz/api_sequence.py", line 4, in decode',
        order="outermost-first",
    ),
    # faulthandler and atheris timeouts (most recent call first): no comma before "in".
    FrameRule(
        "faulthandler",
        _re(r'^\s+File "(?P<file>[^"]+)", line \d+ in (?P<func>\S+)'),
        '  File "/work/kpool/harness/fuzz/grow.py", line 4 in wait_for_grow',
    ),
)

_RUNTIME_FUNCS = (
    r"^(?:__asan|__lsan|__ubsan|__msan|__tsan|__sanitizer|__interceptor|___interceptor|__interception)"
    r"|^(?:malloc|free|calloc|realloc|reallocarray|posix_memalign|aligned_alloc|memalign|valloc|pvalloc)$"
    r"|^operator (?:new|delete)"
    r"|^(?:memcpy|memmove|memset|memcmp|strlen|strcmp|strncmp|strcpy|strdup|__memcpy_chk|__memset_chk)$"
)
SKIP_RULES: tuple[SkipRule, ...] = (
    SkipRule("func", _re(_RUNTIME_FUNCS), "__interceptor_malloc"),
    SkipRule(
        "module", _re(r"libclang_rt|libasan|libubsan|liblsan|libtsan"), "/usr/lib/libclang_rt.asan-x86_64.so"
    ),
    SkipRule("file", _re(r"compiler-rt/lib/"), "/src/llvm/compiler-rt/lib/asan/asan_malloc_linux.cpp"),
    # libc: abort, assert, raise, thread start, program start.
    SkipRule(
        "func",
        _re(
            r"^(?:abort|raise|gsignal|__assert_fail|__assert_fail_base|__assert_perror_fail|pthread_kill"
            r"|__pthread_kill_implementation|__pthread_kill_internal|start_thread|clone3?|__clone3?|_start"
            r"|__restore_rt|__GI_\w+|__libc_\w+|__GI___\w+|__sigaction|killpg|kill)$"
        ),
        "__pthread_kill_implementation",
    ),
    SkipRule(
        "module", _re(r"(?:^|/)(?:libc|libpthread|ld-linux[\w-]*|libstdc\+\+|libgcc_s)[.-]"), "/lib/libc.so.6"
    ),
    SkipRule("file", _re(r"^(?:nptl|csu|stdlib|assert|signal|misc|string)/"), "nptl/./nptl/pthread_kill.c"),
    # glibc's sources as gdb names them (a stress worker's stacks, harness/stress/stacks.py): a mutex or
    # a sleep under the frame that waits.
    SkipRule(
        "file",
        _re(r"^\.{1,2}/(?:nptl|csu|stdlib|assert|signal|misc|string|sysdeps|posix|time)/"),
        "./nptl/futex-internal.c",
    ),
    # libFuzzer and atheris.
    SkipRule(
        "func", _re(r"^fuzzer::|^LLVMFuzzer|^atheris::|^(?:Setup|Fuzz)$"), "fuzzer::Fuzzer::ExecuteCallback"
    ),
    SkipRule(
        "module",
        _re(r"atheris|native_extension_fuzzer|libFuzzer"),
        "/usr/lib/python3/site-packages/atheris/native.so",
    ),
    SkipRule(
        "file",
        _re(r"/atheris/|FuzzerLoop\.cpp|FuzzerDriver\.cpp"),
        "/usr/lib/python3.11/site-packages/atheris/function_hooks.py",
    ),
    # The Python interpreter, ctypes and libffi, between a fuzz target and the C code it calls.
    SkipRule(
        "func",
        _re(
            r"^_?Py[A-Z_]\w*|^_?PyEval|^cfunction_|^method_vectorcall|^_ctypes|^ffi_|^PyCFuncPtr|^_call_function_pointer"
        ),
        "_PyEval_EvalFrameDefault",
    ),
    SkipRule(
        "module",
        _re(r"libpython|_ctypes\.cpython|libffi|/python3(?:\.\d+)?$"),
        "/usr/lib/libpython3.11.so.1.0",
    ),
    SkipRule("file", _re(r"<frozen |/runpy\.py$"), "<frozen runpy>"),
    SkipRule("func", _re(r"\.<module>$"), "api_sequence.<module>"),
    # The fuzz library's stack printer (allocator/driver/fuzz_stacks.c): above every thread's stack.
    SkipRule("func", _re(r"^fz_stacks_\w+$"), "fz_stacks_on_signal"),
    # The harness itself: kept only when nothing else is left (an exception raised inside the harness).
    SkipRule("file", _re(r"(?:^|/)harness/"), "/work/kpool/harness/binding.py", soft=True),
    # The op drivers (the fuzz interpreter, kpdrive): the path to a bug in libkpool, not the bug; kept
    # when nothing else is left (a crash in the driver itself).
    SkipRule(
        "file", _re(r"(?:^|/)driver/[\w.-]+\.c$"), "/work/kpool/allocator/driver/fuzz_model.c", soft=True
    ),
)

CLEANUPS: tuple[Cleanup, ...] = (
    Cleanup(_re(r"\(anonymous namespace\)::"), "", "(anonymous namespace)::bin_pop", "bin_pop"),
    Cleanup(
        _re(r"^(?:non-virtual thunk to |virtual thunk to )"),
        "",
        "non-virtual thunk to Pool::free",
        "Pool::free",
    ),
    Cleanup(_re(r"\s*\[clone [^\]]*\]"), "", "kp__grow [clone .cold]", "kp__grow"),
    Cleanup(
        _re(r"\.(?:cold|isra|constprop|part|lto_priv|localalias)(?:\.\d+)*"),
        "",
        "kp__grow.constprop.0",
        "kp__grow",
    ),
    Cleanup(_re(r"\+0x[0-9a-fA-F]+$"), "", "kp_free+0x1a", "kp_free"),
    Cleanup(_re(r"\(.*\)(?:\s*const)?$"), "", "kp::Pool::alloc(unsigned long) const", "kp::Pool::alloc"),
    # Templates, innermost first, repeatedly (signature.py applies this one until nothing changes).
    Cleanup(_re(r"<[^<>]*>"), "", "kp::Bin<64ul, kp::Lock<int>>::pop", "kp::Bin<64ul, kp::Lock>::pop"),
)
TEMPLATE_CLEANUP = CLEANUPS[-1]

# Noise inside a kind's detail text: addresses and numbers vary from run to run.
DETAIL_NOISE: tuple[Cleanup, ...] = (
    Cleanup(_re(r"0x[0-9a-fA-F]+"), "ADDR", "bad link 0x7f0a3c001040", "bad link ADDR"),
    Cleanup(_re(r"\b\d+\b"), "N", "size 64 in class 7", "size N in class N"),
)

"""Every thread's stack in a timeout report, and the threads that hang.

On a timeout the fuzz library prints each thread's stack under a header that says what the thread was
doing for the input (allocator/driver/fuzz_stacks.c): "running the input", "waiting for the input's
threads" (the fuzzing thread of the concurrent target, in pthread_join), or "idle" (the pool's daemon, a
worker between inputs). libFuzzer's own timeout stack is the fuzzing thread's, which in the concurrent
target only waits: the threads running the input are the ones that hang, and the signature is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.triage import patterns as P


@dataclass(frozen=True)
class ThreadStack:
    tid: int
    name: str
    state: str
    text: str  # the lines under the header, up to the next header or the end of the stacks

    @property
    def running(self) -> bool:
        return self.state in P.THREAD_RUNNING_STATES


def thread_stacks(text: str) -> list[ThreadStack]:
    """The thread stacks of a report, in its order ([] when it has none). A report that holds two dumps
    (a replay printed after the fuzzing log) gives the threads of both."""
    heads = list(P.THREAD_HEADER.finditer(text))
    out = []
    for n, head in enumerate(heads):
        end = heads[n + 1].start() if n + 1 < len(heads) else len(text)
        closing = P.THREADS_END.search(text, head.end(), end)
        body = text[head.end() : closing.start() if closing else end]
        out.append(ThreadStack(int(head["tid"]), head["name"], head["state"].strip(), body))
    return out


def stuck(text: str) -> list[ThreadStack]:
    """The threads that were running the input when the stacks were taken, in the report's order."""
    return [t for t in thread_stacks(text) if t.running]

/*
 * test_memory_outline.c - FAILING: test_memory.c's test_adaptive_target on
 * the default layout (outline). After 256 MiB taken in 40 ms with daemon:off
 * the stats show the daemon's target 0, the rate 0 MiB/s and 0 MiB faulted
 * by the allocation path: the outline pass's sizing (outline.c,
 * kp__ol_daemon_pass) is not in kp_stats, and the allocation path's own
 * segment maps and faults are not counted where the daemon's target reads
 * them. See README.md here.
 */
#define ADAPTIVE_CONF "daemon:off,seed:7"
#include "../test_memory.c"

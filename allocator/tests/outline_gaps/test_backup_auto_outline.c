/*
 * test_backup_auto_outline.c - FAILING: test_backup_auto.c on the default
 * layout (outline). backup:auto grows the reserve in the daemon's pass from
 * pool->peak_out_bytes (backup.c, kp__backup_grow), which a layout:outline
 * pool moves only when its stats are read (stats.c): after 40 MiB of 32 KiB
 * blocks and a daemon step, the reserve is still its 16 KiB of creation
 * (want 1/128 to 1/64 of the peak), and a critical caller of the exhausted
 * pool gets no 512 KiB block. See README.md here.
 */
#define GROWS_CONF "primary_max:128m,daemon:off,seed:3"
#include "../test_backup_auto.c"

/*
 * test_realloc_checks_outline.c - FAILING: test_realloc_checks.c's overflow
 * found at realloc on the default layout (outline). The overflow is found,
 * counted and reported and the contents move to a new block, but the block
 * set aside keeps its record live (outline.c, kp__ol_realloc ->
 * kp__realloc_move -> free_slow's KP_OL_OVERFLOW case: "the block stays
 * allocated"): kp_usable_size of the old pointer is its size, not 0, unlike
 * a block quarantined for a write after free (test_outline_edges.c). See
 * README.md here.
 */
#define OVERFLOW_REALLOC_CONF CONF
#include "../test_realloc_checks.c"

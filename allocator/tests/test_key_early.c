/*
 * test_key_early.c - a pool made before the program's constructors ran (here
 * from .preinit_array; under the preload library, the first malloc of a C++
 * program, whose libstdc++ allocates in its own constructors before the
 * preload's run) gets the AES round keys the CPU allows. Its key was made
 * with __builtin_cpu_supports, which reads what libgcc's constructor
 * (__cpu_indicator_init) found: before it ran, nothing, so the pool had no
 * AES keys, kp__tls_state.fast_free never named it, and every free took
 * free_section's slow copy (a C++ program under the preload: 226
 * instructions more a delete, callgrind).
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

static kp_pool *early;

static void make_early(int argc, char **argv, char **envp)
{
	(void)argc, (void)argv, (void)envp;
	early = kp_create("daemon:off");
}

/* The sanitizers' runtimes start from .preinit_array too: a pool made
 * there would run before them. */
#if !KT_SANITIZED
__attribute__((section(".preinit_array"), used)) static void (*const preinit)(int, char **, char **) = make_early;
#endif

static void early_pool_has_its_keys(void)
{
	REQUIRE(early != NULL, "kp_create before the constructors: %s", kp_last_error());
	bool aes = false;
#if defined(__x86_64__)
	unsigned a, b, c, d;
	aes = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_AES);
#endif
	CHECK(early->secret.aes == aes, "AES round keys %d, the CPU's AES %d", early->secret.aes, aes);
	void *p = kp_alloc(early, 16, 0);
	REQUIRE(p != NULL, "alloc");
	CHECK(kp_free(early, p) == 0, "free");
	if (aes)
		CHECK(kp__tls_state.fast_free == early->id, "the pool's frees take the inline fast path");
	kp_destroy(early);
}

int main(void)
{
#if KT_SANITIZED
	make_early(0, NULL, NULL);
#endif
	early_pool_has_its_keys();
	return ktest_summary();
}

/*
 * fuzz_counters.c - the library's own coverage counters (kpfuzz.h).
 *
 * With -fsanitize=fuzzer-no-link, clang puts one 8-bit counter per edge in
 * the section __sancov_cntrs and one (pc, flags) pair per edge in
 * __sancov_pcs; the linker brackets each section with __start_ and __stop_
 * symbols. They are weak: a build without coverage has neither section.
 */
#include "fuzz_model.h"

extern uint8_t __start___sancov_cntrs[] __attribute__((weak, visibility("hidden")));
extern uint8_t __stop___sancov_cntrs[] __attribute__((weak, visibility("hidden")));
extern const uintptr_t __start___sancov_pcs[] __attribute__((weak, visibility("hidden")));

KP_EXPORT size_t kp_fuzz_counters(uint8_t **counters, const uintptr_t **pcs)
{
	*counters = __start___sancov_cntrs;
	*pcs = __start___sancov_pcs;
	if (!__start___sancov_cntrs || !__stop___sancov_cntrs || !__start___sancov_pcs)
		return 0;
	return (size_t)(__stop___sancov_cntrs - __start___sancov_cntrs);
}

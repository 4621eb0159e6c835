/*
 * attack19.c - bad input and hostile programs for libkpool-preload.so, one
 * mode each (tests/test_preload_attack19.py):
 *
 *   foreign-first   free() of a stack address before the program's first
 *                   allocation (before the pool exists): an invalid free,
 *                   reported as one (it was refused in silence)
 *   foreign-later   the same free after an allocation (the pool exists)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "foreign-first") || !strcmp(mode, "foreign-later")) {
		if (!strcmp(mode, "foreign-later"))
			free(malloc(32));
		int on_stack = 0;
		int *volatile p = &on_stack;
		free(p);
		printf("still running after the free of a stack address\n");
		return 0;
	}
	fprintf(stderr, "usage: attack19 foreign-first|foreign-later\n");
	return 2;
}

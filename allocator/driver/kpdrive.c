/*
 * kpdrive.c - the op driver as a program: read a program (key=value lines)
 * from a file or stdin, run it, print one JSON document on stdout.
 *
 *   kpdrive [--check] [FILE|-] [KEY=VALUE ...]
 *
 * Arguments after the file override its lines (the runner gives each worker
 * its seed this way). --check only parses the program: the runner's check,
 * before any worker starts, of every value this parser refuses. Exit status:
 * 0 the run completed (its verdict is in the JSON) or the program is valid, 2
 * a bad program, 3 the run could not be set up (JSON with "error").
 * Peers: run with allocator=malloc under LD_PRELOAD=libjemalloc.so.2 etc.
 */
#include "kpdriver.h"

#include <stdlib.h>
#include <string.h>

static char *read_all(FILE *f)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	while (buf) {
		size_t n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
		if (len + 1 == cap) {
			char *b = realloc(buf, cap *= 2);
			if (!b)
				free(buf);
			buf = b;
		}
	}
	if (buf)
		buf[len] = 0;
	return buf;
}

static void usage(void)
{
	fprintf(stderr, "usage: kpdrive [--check] [FILE|-] [KEY=VALUE ...]\n"
			"  runs the op-driver program in FILE (or stdin) and prints JSON results;\n"
			"  KEY=VALUE arguments are appended to the program (later lines win);\n"
			"  --check: parse the program only (exit 0 valid, 2 invalid).\n");
}

int main(int argc, char **argv)
{
	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage();
		return 0;
	}
	int i = 1;
	bool check = argc > 1 && !strcmp(argv[1], "--check");
	char *text = NULL;
	if (check)
		i++;
	if (argc > i && !strchr(argv[i], '=')) {
		FILE *f = strcmp(argv[i], "-") ? fopen(argv[i], "r") : stdin;
		if (!f) {
			perror(argv[i]);
			return 2;
		}
		text = read_all(f);
		if (f != stdin)
			fclose(f);
		i++;
	} else {
		text = strdup("");
	}
	for (; text && i < argc; i++) {
		size_t n = strlen(text), m = strlen(argv[i]);
		char *t = realloc(text, n + m + 2);
		if (!t) {
			free(text);
			text = NULL;
			break;
		}
		text = t;
		memcpy(text + n, "\n", 1);
		memcpy(text + n + 1, argv[i], m + 1);
	}
	if (!text) {
		fprintf(stderr, "kpdrive: out of memory\n");
		return 2;
	}
	static struct kpd_program prog;
	char err[512];
	kpd_program_defaults(&prog);
	if (kpd_program_parse(&prog, text, err, sizeof(err)) != 0) {
		fprintf(stderr, "kpdrive: bad program: %s\n", err);
		free(text);
		return 2;
	}
	free(text);
	if (check)
		return 0;
	static struct kpd_run run;
	int rc = kpd_run(&run, &prog);
	if (rc != 0)
		fprintf(stderr, "kpdrive: %s\n", run.error);
	kpd_report(stdout, &run);
	fflush(stdout);
	kpd_run_free(&run);
	return rc ? 3 : 0;
}

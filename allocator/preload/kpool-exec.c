/*
 * kpool-exec.c - what `kpool run` (harness/run.py) needs of env(1), and no
 * more: the program's environment and SIGHUP set, then exec.
 *
 *   kpool-exec [--default-signal=HUP] [--] [NAME=VALUE]... PROG [ARG]...
 *
 * "--" ends the options, as env's: a PROG named "--version" is the program.
 *
 * GNU time forks it and reports its rusage peak RSS (ru_maxrss), which Linux
 * keeps across exec: the peak of the program itself, its exit included, but
 * never less than the high-water mark of what exec'd it. env(1) loads the C
 * library and the locale, 1.6 MiB here, where a small program on glibc peaks
 * at 1.2-1.7 MiB. This one is linked static and touches little: the floor is
 * GNU time's own fork, 548 KiB here (the Makefile's exec target). The
 * program's own peak, exit included, is then GNU time's figure.
 *
 * Exit status as env's: 127 when PROG is not found, 126 when it cannot run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int i = 1;

	if (i < argc && strcmp(argv[i], "--default-signal=HUP") == 0) {
		/* kpool run starts GNU time with SIGHUP ignored: the program gets it back */
		signal(SIGHUP, SIG_DFL);
		i++;
	}
	if (i < argc && strcmp(argv[i], "--") == 0)
		i++;
	for (; i < argc && argv[i][0] != '=' && strchr(argv[i], '=') != NULL; i++)
		putenv(argv[i]);
	if (i >= argc) {
		fputs("kpool-exec: no command\n", stderr);
		return 125;
	}
	execvp(argv[i], argv + i);
	int err = errno;
	fprintf(stderr, "kpool-exec: '%s': %s\n", argv[i], strerror(err));
	return err == ENOENT ? 127 : 126;
}

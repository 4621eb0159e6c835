/*
 * fuzz_history.c - the inputs since the fuzz pools were made, kept in a file
 * as they run, so that a crash that needs the state earlier inputs left in a
 * pool replays from that file (`python <target>.py --kpool-history FILE`,
 * harness/fuzz/target.py).
 *
 * The pools live across inputs (fz_pool_get): a damaged free list or a
 * leaked unit stays for the next input. So that "the inputs since the pools
 * were made" stays a bounded list, a target's pools are made anew every
 * FZ_HISTORY_INPUTS inputs (or FZ_HISTORY_BYTES bytes of them) and the list
 * starts again. With $KPOOL_FUZZ_HISTORY naming a folder, the list is kept in
 * <folder>/history-<pid>, a shared mapping of the file: whatever kills the
 * process (the oracle's abort, a sanitizer, a signal, libFuzzer's timeout),
 * what was written is in the file, with no hook to run at death. Format:
 * "kpfuzz-history 1\n", then per input its length (4 bytes, little endian)
 * and its bytes, then a length of 0; the last input is the one that ran last.
 * Without $KPOOL_FUZZ_HISTORY nothing is kept (a replay, the coverage count).
 *
 * The file is sparse, and a store to a page of a shared file mapping that the
 * file system cannot back (a full disk) is a SIGBUS, which the sanitizer
 * reports as a crash of the input (a false crash, signed and recorded). So
 * the blocks are reserved (posix_fallocate) FZ_HISTORY_CHUNK at a time before
 * any store reaches them; a reservation refused is said once on stderr and
 * the history goes (its file removed: a partial one would replay the wrong
 * inputs), the fuzzing goes on without it.
 */
#include "fuzz_model.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* 16384 inputs: at 10-30k executions per second about a second of fuzzing,
 * longer than the state behind any planted bug's crash takes to build up,
 * and a replay of them takes a second. */
#define FZ_HISTORY_INPUTS 16384
/* 64 MiB of file (sparse: only what is written takes room): long inputs
 * (-max_len up to 1 MiB) remake the pools sooner. */
#define FZ_HISTORY_BYTES ((size_t)64 << 20)
#define FZ_HISTORY_HEAD "kpfuzz-history 1\n"
/* Blocks reserved at a time: 1 MiB is 16k inputs of the default 64-byte
 * -max_len, so one posix_fallocate per pool remaking at most, and never more
 * than 1 MiB of disk taken ahead of what is written. */
#define FZ_HISTORY_CHUNK ((size_t)1 << 20)

static uint8_t *hist;	 /* the mapping, or NULL: keep nothing */
static size_t hist_len;	 /* bytes of records after the head */
static size_t hist_n;	 /* inputs since the pools were made */
static size_t hist_room; /* bytes of the file whose blocks are reserved */
static int hist_fd = -1;
static char hist_path[4096];
static bool hist_init;

/* Reserve the file's blocks up to `end` (a multiple of FZ_HISTORY_CHUNK past
 * it); false, with the history given up, when the file system refuses. */
static bool history_reserve(size_t end)
{
	if (end <= hist_room)
		return true;
	size_t to = (end + FZ_HISTORY_CHUNK - 1) / FZ_HISTORY_CHUNK * FZ_HISTORY_CHUNK;
	if (to > FZ_HISTORY_BYTES)
		to = FZ_HISTORY_BYTES;
	int err = posix_fallocate(hist_fd, (off_t)hist_room, (off_t)(to - hist_room));
	if (err == 0) {
		hist_room = to;
		return true;
	}
	fprintf(stderr,
		"kpfuzz: the input history %s is not kept: %s (a crash that needs earlier inputs replays alone)\n",
		hist_path, strerror(err));
	if (hist)
		munmap(hist, FZ_HISTORY_BYTES);
	hist = NULL;
	close(hist_fd);
	hist_fd = -1;
	unlink(hist_path);
	return false;
}

static void history_open(void)
{
	hist_init = true;
	const char *dir = getenv("KPOOL_FUZZ_HISTORY");
	if (!dir || !dir[0] ||
	    (size_t)snprintf(hist_path, sizeof hist_path, "%s/history-%d", dir, (int)getpid()) >= sizeof hist_path)
		return;
	hist_fd = open(hist_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (hist_fd < 0)
		return;
	if (ftruncate(hist_fd, (off_t)FZ_HISTORY_BYTES) == 0 && history_reserve(FZ_HISTORY_CHUNK)) {
		void *m = mmap(NULL, FZ_HISTORY_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, hist_fd, 0);
		if (m != MAP_FAILED) {
			hist = m;
			memcpy(hist, FZ_HISTORY_HEAD, sizeof FZ_HISTORY_HEAD - 1);
			return;
		}
	}
	if (hist_fd >= 0) { /* no history after all (history_reserve gave it up itself) */
		close(hist_fd);
		hist_fd = -1;
		unlink(hist_path);
	}
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void fz_history_add(fz_pool *pools, size_t npools, const uint8_t *data, size_t len)
{
	if (!hist_init)
		history_open();
	size_t head = sizeof FZ_HISTORY_HEAD - 1;
	if (hist_n >= FZ_HISTORY_INPUTS || head + hist_len + len + 8 > FZ_HISTORY_BYTES) {
		for (size_t i = 0; i < npools; i++)
			if (pools[i].pool)
				fz_pool_reset(&pools[i]);
		hist_len = hist_n = 0;
	}
	hist_n++;
	if (!hist || head + len + 8 > FZ_HISTORY_BYTES || !history_reserve(head + hist_len + 4 + len + 4))
		return;
	uint8_t *at = hist + head + hist_len;
	put_u32(at, (uint32_t)len);
	memcpy(at + 4, data, len);
	put_u32(at + 4 + len, 0); /* the end, until the next input */
	hist_len += 4 + len;
}

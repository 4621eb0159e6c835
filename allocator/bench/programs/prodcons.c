/*
 * prodcons.c - producers and consumers: producer threads allocate messages
 * of random size and push them on a bounded queue; consumer threads pop
 * them, read them and free them. Every block is freed by another thread.
 *
 *   prodcons [producers=2] [consumers=2] [messages per producer=1000000]
 *
 * Prints "checksum: N" (the sum of the bytes of every message: the same
 * under any allocator).
 */
#include "common.h"

#include <pthread.h>
#include <string.h>

#define QUEUE 1024 /* a few pages of pointers: producers block on it often */

struct msg {
	size_t len;
	unsigned char data[];
};

static struct msg *queue[QUEUE];
static size_t head, tail, count;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;
static long producers, consumers, messages;
static uint64_t consumed_sum[256];

static void push(struct msg *m)
{
	pthread_mutex_lock(&lock);
	while (count == QUEUE)
		pthread_cond_wait(&not_full, &lock);
	queue[tail] = m;
	tail = (tail + 1) % QUEUE;
	count++;
	pthread_cond_signal(&not_empty);
	pthread_mutex_unlock(&lock);
}

static struct msg *pop(void)
{
	pthread_mutex_lock(&lock);
	while (count == 0)
		pthread_cond_wait(&not_empty, &lock);
	struct msg *m = queue[head];
	head = (head + 1) % QUEUE;
	count--;
	pthread_cond_signal(&not_full);
	pthread_mutex_unlock(&lock);
	return m;
}

static void *produce(void *arg)
{
	uint64_t seed = 0xD1B54A32D192ED03ULL * (uint64_t)((long)arg + 1);
	for (long i = 0; i < messages; i++) {
		size_t len = rng_size(&seed, 16, 2048);
		struct msg *m = malloc(sizeof *m + len);
		if (!m)
			die("malloc");
		m->len = len;
		memset(m->data, (int)(i & 0xff), len);
		push(m);
	}
	return NULL;
}

static void *consume(void *arg)
{
	long id = (long)arg;
	uint64_t sum = 0;
	for (;;) {
		struct msg *m = pop();
		if (m->len == 0) { /* the end marker */
			free(m);
			break;
		}
		for (size_t k = 0; k < m->len; k += 64)
			sum += m->data[k];
		sum += m->len;
		free(m);
	}
	consumed_sum[id] = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	producers = arg_long(argc, argv, 1, 2);
	consumers = arg_long(argc, argv, 2, 2);
	messages = arg_long(argc, argv, 3, 1000000);
	if (producers > 256 || consumers > 256)
		die("at most 256 producers and 256 consumers");
	pthread_t p[256], c[256];
	for (long i = 0; i < consumers; i++)
		if (pthread_create(&c[i], NULL, consume, (void *)i) != 0)
			die("pthread_create");
	for (long i = 0; i < producers; i++)
		if (pthread_create(&p[i], NULL, produce, (void *)i) != 0)
			die("pthread_create");
	for (long i = 0; i < producers; i++)
		pthread_join(p[i], NULL);
	for (long i = 0; i < consumers; i++) {
		struct msg *end = calloc(1, sizeof *end);
		if (!end)
			die("calloc");
		push(end);
	}
	uint64_t sum = 0;
	for (long i = 0; i < consumers; i++) {
		pthread_join(c[i], NULL);
		sum += consumed_sum[i];
	}
	printf("checksum: %llu\n", (unsigned long long)sum);
	return 0;
}

/*
 * test_outline_slot_ref.c - the outline slot names a pool by its address
 * (outline.h, kp__ol_slot_id: address + 1, since s38-fasta; its id
 * before), so no pool may be made at the address a thread's slot still
 * names: that thread's fast paths would take the new pool for the old one,
 * whose heap and slice map are gone. The slot holds a reference to the
 * pool's structure (pool.c, kp__pool_unref; outline.c, slot_name): a
 * destroyed pool's structure stays mapped while another thread's slot
 * names it, and goes back once that slot names another pool or its thread
 * ends; with no other slot naming it, at kp_destroy. And a NULL pool,
 * whose tag (1) the fast paths compute without a test, matches no slot,
 * marked or not.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"
#include "outline.h"

#include <pthread.h>
#include <sys/mman.h>

/* Is the page of p mapped? (mincore: ENOMEM for an unmapped range) */
static bool mapped(const void *p)
{
	unsigned char v;
	return mincore((void *)((uintptr_t)p & ~(uintptr_t)(KP_PAGE - 1)), KP_PAGE, &v) == 0;
}

static void test_destroy_unmaps_when_no_other_slot_names_it(void)
{
	kp_pool *a = kp_create("daemon:off");
	REQUIRE(a != NULL, "kp_create: %s", kp_last_error());
	CHECK(kp_free(a, kp_alloc(a, 16, 0)) == 0, "a's calls");
	REQUIRE(kp__ol_slot.aid == kp__ol_slot_id(a), "the slot does not name a");
	kp_destroy(a);
	CHECK(kp__ol_slot.aid == 0 && kp__ol_slot.id == 0, "the slot still names the destroyed pool");
	CHECK(!mapped(a), "the destroyed pool's structure is still mapped (no slot names it)");
}

/* A thread whose slot names a (its calls), then waits; told, it calls b,
 * or ends. */
struct holder {
	kp_pool *a, *b;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int step; /* 1: a's calls made; 2: call b; 3: b's calls made; 4: end */
};

static void step_to(struct holder *h, int step)
{
	pthread_mutex_lock(&h->mu);
	h->step = step;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

static void wait_for(struct holder *h, int step)
{
	pthread_mutex_lock(&h->mu);
	while (h->step < step)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
}

static void *holder_main(void *arg)
{
	struct holder *h = arg;
	CHECK(kp_free(h->a, kp_alloc(h->a, 32, 0)) == 0, "the holder's calls on a");
	CHECK(kp__ol_slot.aid == kp__ol_slot_id(h->a), "the holder's slot does not name a");
	step_to(h, 1);
	pthread_mutex_lock(&h->mu);
	while (h->step != 2 && h->step != 4)
		pthread_cond_wait(&h->cv, &h->mu);
	int step = h->step;
	pthread_mutex_unlock(&h->mu);
	if (step == 2) {
		CHECK(kp_free(h->b, kp_alloc(h->b, 32, 0)) == 0, "the holder's calls on b");
		step_to(h, 3);
		wait_for(h, 4);
	}
	return NULL;
}

/* Pools made while the holder's slot names the destroyed a: none at a's
 * address (on main before s38-fasta, whose slot held ids, the next pool
 * took it: mmap hands the hole back). */
static void no_pool_at(const kp_pool *a, const char *when)
{
	kp_pool *made[8];
	for (int i = 0; i < 8; i++) {
		made[i] = kp_create("daemon:off");
		CHECK(made[i] != NULL && made[i] != a, "%s: pool %d made at the destroyed pool's address %p", when, i,
		      (const void *)a);
	}
	for (int i = 0; i < 8; i++)
		kp_destroy(made[i]);
}

static void run_holder(bool switch_first)
{
	struct holder h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
	h.a = kp_create("daemon:off");
	h.b = kp_create("daemon:off");
	REQUIRE(h.a && h.b, "kp_create: %s", kp_last_error());
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, holder_main, &h) == 0, "pthread_create");
	wait_for(&h, 1);
	kp_pool *a = h.a;
	kp_destroy(a);
	CHECK(mapped(a), "a's structure unmapped while the holder's slot names it");
	no_pool_at(a, "a destroyed, named by the holder's slot");
	if (switch_first) {
		step_to(&h, 2);
		wait_for(&h, 3);
		CHECK(!mapped(a), "a's structure still mapped after the holder's slot named b");
	}
	step_to(&h, 4);
	pthread_join(t, NULL);
	CHECK(!mapped(a), "a's structure still mapped after the holder ended");
	kp_destroy(h.b);
}

static void test_a_slot_keeps_a_destroyed_pool_until_it_names_another(void)
{
	run_holder(true);
}

static void test_a_slot_keeps_a_destroyed_pool_until_its_thread_ends(void)
{
	run_holder(false);
}

/* kp_alloc and kp_free make the tag of a NULL pool (1) without a test:
 * refused as before, and no match with a marked slot (a handler's call
 * inside one of a's). */
static void test_null_pool_matches_no_slot(void)
{
	KT_POOL(a, "daemon:off");
	void *p = kp_alloc(a, 24, 0);
	REQUIRE(p != NULL, "a's allocation");
	errno = 0;
	CHECK(kp_alloc(NULL, 24, 0) == NULL && errno == EINVAL, "kp_alloc(NULL): errno %d", errno);
	CHECK(kp_free(NULL, p) != 0, "kp_free(NULL, p) accepted");
	CHECK(!kp__ol_enter(kp__ol_slot_id(NULL)), "a NULL pool's tag matched the slot naming a");
	REQUIRE(kp__ol_enter(kp__ol_slot_id(a)), "a's tag did not match");
	CHECK(!kp__ol_enter(kp__ol_slot_id(NULL)), "a NULL pool's tag matched a marked slot");
	errno = 0;
	CHECK(kp_alloc(NULL, 24, 0) == NULL && errno == EINVAL, "kp_alloc(NULL) inside the mark: errno %d", errno);
	CHECK(kp_free(NULL, p) != 0, "kp_free(NULL, p) inside the mark accepted");
	CHECK(kp__ol_slot.id == 0, "the NULL calls left the marked slot at %llu", (unsigned long long)kp__ol_slot.id);
	kp__ol_leave(kp__ol_slot_id(a));
	CHECK(kp_free(a, p) == 0, "a's free after the NULL calls");
	kp_destroy(a);
}

int main(void)
{
	RUN(test_destroy_unmaps_when_no_other_slot_names_it);
	RUN(test_a_slot_keeps_a_destroyed_pool_until_it_names_another);
	RUN(test_a_slot_keeps_a_destroyed_pool_until_its_thread_ends);
	RUN(test_null_pool_matches_no_slot);
	return ktest_summary();
}

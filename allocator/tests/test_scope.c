/*
 * test_scope.c - the critical scope belongs to the thread, whatever else the
 * thread does: it lasts until its exit across any number of other pools
 * (issue 12, defect 3: the depth lived in the per-pool thread cache, which a
 * fifth pool evicts), and no other thread ever holds it.
 */
#include "ktest.h"

#include <pthread.h>

#define KiB ((size_t)1 << 10)

/* One 4 MiB primary that cannot grow, a 1 MiB reserve, no daemon: once
 * filled, only the backup can serve. */
static const char *const CONF = "primary_initial:4m,primary_max:4m,backup:1m,daemon:off,seed:12";

#define FILL_MAX 16384
static void *fill[FILL_MAX];
static size_t nfill;

/* Allocate blocks of decreasing sizes until each fails: afterwards the
 * primary serves none of them. */
static void fill_primary(kp_pool *pool)
{
	static const size_t sizes[] = {64 * KiB, 4 * KiB, 256, 16};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
		while (nfill < FILL_MAX && (fill[nfill] = kp_alloc(pool, sizes[k], 0)) != NULL)
			nfill++;
}

static void unfill(kp_pool *pool)
{
	while (nfill)
		kp_free(pool, fill[--nfill]);
}

struct try_arg {
	kp_pool *pool;
	uint64_t token;
	int enter; /* open a scope first (and never close it) */
	void *got;
};

static void *try_critical(void *varg)
{
	struct try_arg *a = (struct try_arg *)varg;
	if (a->enter && kp_critical_enter(a->pool, a->token) != 0)
		return NULL;
	a->got = kp_alloc(a->pool, 256, KP_CRITICAL);
	if (a->got && !a->enter)
		kp_free(a->pool, a->got);
	return NULL;
}

static void *thread_critical(kp_pool *pool, uint64_t token, int enter)
{
	struct try_arg ta = {pool, token, enter, NULL};
	pthread_t th;
	if (pthread_create(&th, NULL, try_critical, &ta) != 0)
		return (void *)-1;
	pthread_join(th, NULL);
	return ta.got;
}

/* A scope on pool A survives touching five other pools (more than the
 * thread's four cache slots); its exit then closes it without complaint. */
static void test_scope_across_pools(void)
{
	KT_POOL(a, CONF);
	nfill = 0;
	fill_primary(a);
	uint64_t token = kp_critical_token(a);
	REQUIRE(token != 0, "token");
	REQUIRE(kp_critical_enter(a, token) == 0, "enter: %s", kp_last_error());
	void *c1 = kp_alloc(a, 300, KP_CRITICAL);
	CHECK(c1 != NULL, "KP_CRITICAL in a scope on a full primary got NULL");

	kp_pool *other[5];
	for (int i = 0; i < 5; i++) {
		other[i] = kp_create("primary_initial:4m,daemon:off");
		REQUIRE(other[i] != NULL, "kp_create: %s", kp_last_error());
		void *p = kp_alloc(other[i], 100, 0);
		CHECK(p != NULL, "alloc from pool %d", i);
		CHECK(kp_free(other[i], p) == 0, "free into pool %d", i);
	}
	kt_events_clear(a);
	void *c2 = kp_alloc(a, 300, KP_CRITICAL);
	CHECK(c2 != NULL, "the scope on A was lost after touching 5 other pools: KP_CRITICAL refused (%s)",
	      kp_last_error());
	CHECK(kt_events_count(a, KP_EV_DENIED) == 0, "a denied event inside a valid scope");
	kp_critical_exit(a);
	CHECK(kt_events_count(a, KP_EV_TOKEN) == 0, "kp_critical_exit of a valid scope recorded a token event "
						    "(\"critical_exit without a scope\")");
	void *c3 = kp_alloc(a, 300, KP_CRITICAL);
	CHECK(c3 == NULL, "KP_CRITICAL served after the scope's exit: %p", c3);
	kp_free(a, c1);
	kp_free(a, c2);
	for (int i = 0; i < 5; i++)
		kp_destroy(other[i]);
	unfill(a);
	kp_destroy(a);
}

/* The same with the other pools' caches destroyed and made again in between,
 * and nested scopes: the depth is counted exactly. */
static void test_scope_nested_across_pools(void)
{
	KT_POOL(a, CONF);
	nfill = 0;
	fill_primary(a);
	uint64_t token = kp_critical_token(a);
	REQUIRE(kp_critical_enter(a, token) == 0, "enter");
	REQUIRE(kp_critical_enter(a, token) == 0, "nested enter");
	for (int round = 0; round < 3; round++)
		for (int i = 0; i < 6; i++) {
			kp_pool *o = kp_create("primary_initial:4m,daemon:off");
			REQUIRE(o != NULL, "kp_create: %s", kp_last_error());
			kp_free(o, kp_alloc(o, 64, 0));
			kp_destroy(o);
		}
	kp_critical_exit(a);
	void *c = kp_alloc(a, 300, KP_CRITICAL);
	CHECK(c != NULL, "the outer scope was lost (depth not kept across other pools)");
	kp_free(a, c);
	kt_events_clear(a);
	kp_critical_exit(a);
	CHECK(kt_events_count(a, KP_EV_TOKEN) == 0, "the outer exit found no scope");
	c = kp_alloc(a, 300, KP_CRITICAL);
	CHECK(c == NULL, "served after both exits");
	kt_events_clear(a);
	kp_critical_exit(a);
	CHECK(kt_events_count(a, KP_EV_TOKEN) == 1, "an unbalanced exit records an event");
	unfill(a);
	kp_destroy(a);
}

/* No other thread holds A's scope: not one running beside it, and not one
 * started after a thread that entered a scope and ended without its exit
 * (whose cache the new thread may well be given). */
static void test_scope_not_inherited(void)
{
	KT_POOL(a, CONF);
	nfill = 0;
	fill_primary(a);
	uint64_t token = kp_critical_token(a);
	REQUIRE(kp_critical_enter(a, token) == 0, "enter");
	void *got = thread_critical(a, token, 0);
	CHECK(got == NULL, "another thread was served by A's backup while the main thread held the scope");
	kp_critical_exit(a);

	for (int i = 0; i < 8; i++) {
		got = thread_critical(a, token, 1);
		CHECK(got != NULL && got != (void *)-1, "a thread in its own scope was refused");
		if (got && got != (void *)-1)
			kp_free(a, got);
		got = thread_critical(a, token, 0);
		CHECK(got == NULL, "a new thread inherited the scope of a thread that ended inside it");
	}
	void *c = kp_alloc(a, 300, KP_CRITICAL);
	CHECK(c == NULL, "the main thread holds a scope it closed");
	unfill(a);
	kp_destroy(a);
}

/* Scopes on many pools at once, each kept; a destroyed pool's scope is
 * forgotten (its id is never reused, so it never matches a new pool). */
static void test_scopes_on_many_pools(void)
{
	enum { N = 6 };
	kp_pool *p[N];
	uint64_t tok[N];
	for (int i = 0; i < N; i++) {
		p[i] = kp_create("primary_initial:4m,daemon:off");
		REQUIRE(p[i] != NULL, "kp_create");
		tok[i] = kp_critical_token(p[i]);
		CHECK(kp_critical_enter(p[i], tok[i]) == 0, "enter on pool %d", i);
	}
	for (int i = 0; i < N; i++) {
		kt_events_clear(p[i]);
		kp_critical_exit(p[i]);
		CHECK(kt_events_count(p[i], KP_EV_TOKEN) == 0, "pool %d: its scope was lost", i);
	}
	for (int i = 0; i < N; i++) {
		kp_critical_enter(p[i], tok[i]);
		kp_destroy(p[i]); /* destroyed inside a scope */
	}
	KT_POOL(q, CONF);
	nfill = 0;
	fill_primary(q);
	uint64_t t = kp_critical_token(q);
	void *c = kp_alloc(q, 300, KP_CRITICAL);
	CHECK(c == NULL, "a new pool inherited a destroyed pool's scope");
	REQUIRE(kp_critical_enter(q, t) == 0, "enter on the new pool: %s", kp_last_error());
	c = kp_alloc(q, 300, KP_CRITICAL);
	CHECK(c != NULL, "the new pool's scope does not serve");
	kp_free(q, c);
	kp_critical_exit(q);
	unfill(q);
	kp_destroy(q);
}

int main(void)
{
	RUN(test_scope_across_pools);
	RUN(test_scope_nested_across_pools);
	RUN(test_scope_not_inherited);
	RUN(test_scopes_on_many_pools);
	return ktest_summary();
}

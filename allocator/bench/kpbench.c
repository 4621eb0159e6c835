/*
 * kpbench - the allocator microbenchmark.
 *
 * One binary runs the same four workloads against libkpool (--alloc kpool)
 * or the process's malloc/free (--alloc malloc), so glibc, jemalloc,
 * mimalloc and tcmalloc are measured by running it under LD_PRELOAD:
 *
 *   (a) 16-256 B uniform, 1000 live objects, one thread: free a random slot,
 *       allocate a new block into it.
 *   (b) 16 B-64 KiB log-uniform, 10000 live objects, otherwise as (a).
 *   (c) two threads, 16-256 B; every block is freed by the other thread
 *       (a bounded single-producer single-consumer queue each way).
 *   (d) grow to 1 GiB in 4-64 KiB blocks touching every page, free all;
 *       three rounds. Per round: time, malloc+touch latency, and the page
 *       faults of the allocating thread (getrusage RUSAGE_THREAD).
 *   (f) eight buffers grown by realloc from 4 KiB to 16 MiB, doubling; one
 *       op is one realloc (grow_realloc.c).
 *
 * One "op" in (a)-(c) is one allocation and one free. Throughput is timed
 * over a whole untimed loop with CLOCK_MONOTONIC; latency comes from a
 * separate pass of the same workload in which every call is bracketed by
 * clock_gettime (so each figure includes one clock read, reported as
 * "clock_ns") into a log-linear histogram. Random slots and sizes come from
 * a table precomputed with splitmix64 so the generator stays out of the loop.
 * Blocks are marked at both ends when allocated and checked before they are
 * freed, through volatile accesses, so no compiler can elide the work.
 *
 * Resident memory: a sampler thread traces the process's RSS over each
 * workload (rss.c); the output gives the trace, its peak and VmHWM.
 *
 * Output: one line per workload, or with --json one JSON object per line
 * (harness/bench.py reads those). With kpool the pool's kp_stats_json()
 * object is embedded, which carries its system-call counts.
 */
#include "kpbench.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

/* ---- output ------------------------------------------------------------------ */

static void json_str(const char *s)
{
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void json_lat(const char *key, const struct hist *h)
{
	printf("\"%s\":{\"count\":%" PRIu64 ",\"p50\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64
	       ",\"max\":%" PRIu64 ",\"mean\":%.1f}",
	       key, h->count, hist_pct(h, 0.50), hist_pct(h, 0.99), hist_pct(h, 0.999), h->max,
	       h->count ? (double)h->sum / (double)h->count : 0.0);
}

static void print_json(const struct result *r, uint64_t clock_ns)
{
	printf("{\"workload\":\"%c\",\"desc\":", r->wl);
	json_str(r->desc);
	printf(",\"alloc\":\"%s\",\"preload\":", g_use_kpool ? "kpool" : "malloc");
	json_str(getenv("LD_PRELOAD"));
	printf(",\"conf\":");
	json_str(g_use_kpool ? (r->conf ? r->conf : "") : NULL);
	printf(",\"ops\":%" PRIu64
	       ",\"seconds\":%.6f,\"ops_per_s\":%.1f,\"cpu_seconds\":%.6f,\"ops_per_cpu_s\":%.1f,\"clock_ns\":%" PRIu64
	       ",\"thread_minflt\":%" PRIu64 ",\"verify_errors\":%" PRIu64 ",\"alloc_failures\":%" PRIu64
	       ",\"free_errors\":%" PRIu64 ",\"lat_ns\":{",
	       r->ops, r->secs, r->secs > 0 ? (double)r->ops / r->secs : 0.0, r->cpu_secs,
	       r->cpu_secs > 0 ? (double)r->ops / r->cpu_secs : 0.0, clock_ns, r->thread_minflt, r->verify_errors,
	       r->alloc_failures, r->free_errors);
	json_lat("alloc", r->lat_alloc);
	if (r->lat_free) {
		putchar(',');
		json_lat("free", r->lat_free);
	}
	printf("}");
	if (r->nrounds) {
		printf(",\"rounds\":[");
		for (int i = 0; i < r->nrounds; i++) {
			const struct round *rd = &r->rounds[i];
			printf("%s{\"alloc_s\":%.6f,\"free_s\":%.6f,\"blocks\":%" PRIu64 ",\"bytes\":%" PRIu64
			       ",\"pages\":%" PRIu64 ",\"thread_minflt\":%" PRIu64 ",\"process_minflt\":%" PRIu64 ",",
			       i ? "," : "", rd->alloc_s, rd->free_s, rd->blocks, rd->bytes, rd->pages,
			       rd->thread_minflt, rd->process_minflt);
			json_lat("lat_ns", rd->lat);
			putchar('}');
		}
		putchar(']');
	}
	const struct rss_trace *t = &r->rss;
	printf(",\"rss\":{\"start_kib\":%" PRIu64 ",\"peak_kib\":%" PRIu64 ",\"hwm_kib\":%" PRIu64
	       ",\"end_kib\":%" PRIu64 ",\"interval_ms\":%u,\"kib\":[",
	       t->start_kib, t->peak_kib, t->hwm_kib, t->end_kib, t->interval_ms);
	for (unsigned i = 0; i < t->n; i++)
		printf("%s%u", i ? "," : "", t->kib[i]);
	printf("]}");
	if (r->cross.set)
		printf(",\"cross\":{\"same_cpu\":%.3f,\"queue_full\":%" PRIu64 ",\"yields\":%" PRIu64
		       ",\"vcsw\":%" PRIu64 ",\"ivcsw\":%" PRIu64 "}",
		       r->cross.same_cpu, r->cross.queue_full, r->cross.yields, r->cross.vcsw, r->cross.ivcsw);
	printf(",\"kpool_stats\":%s}\n", r->kp_stats ? r->kp_stats : "null");
	fflush(stdout);
}

static void print_text(const struct result *r, uint64_t clock_ns)
{
	const struct hist *h = r->lat_alloc;
	printf("(%c) %s\n", r->wl, r->desc);
	printf("    %-6s %12.0f ops/s  %" PRIu64 " ops in %.3f s   alloc ns p50 %" PRIu64 " p99 %" PRIu64
	       " p99.9 %" PRIu64 " max %" PRIu64 " (clock read %" PRIu64 " ns)\n",
	       g_use_kpool ? "kpool" : "malloc", r->secs > 0 ? (double)r->ops / r->secs : 0.0, r->ops, r->secs,
	       hist_pct(h, 0.5), hist_pct(h, 0.99), hist_pct(h, 0.999), h->max, clock_ns);
	if (r->cpu_secs > 0)
		printf("    %-6s %12.0f ops per CPU second of the timed thread%s (%.3f s of CPU)\n",
		       g_use_kpool ? "kpool" : "malloc", (double)r->ops / r->cpu_secs, r->wl == 'c' ? "s" : "",
		       r->cpu_secs);
	if (r->cross.set)
		printf("    threads on one CPU in %.0f%% of samples; %" PRIu64 " pushes found a full queue, %" PRIu64
		       " yields; %" PRIu64 " voluntary, %" PRIu64 " involuntary context switches\n",
		       100.0 * r->cross.same_cpu, r->cross.queue_full, r->cross.yields, r->cross.vcsw, r->cross.ivcsw);
	for (int i = 0; i < r->nrounds; i++) {
		const struct round *rd = &r->rounds[i];
		printf("    round %d: %" PRIu64 " blocks, %.1f MiB, alloc+touch %.3f s, free %.3f s, "
		       "page faults %" PRIu64 " thread / %" PRIu64 " process (%" PRIu64 " pages), p99 %" PRIu64 " ns\n",
		       i + 1, rd->blocks, (double)rd->bytes / 1048576.0, rd->alloc_s, rd->free_s, rd->thread_minflt,
		       rd->process_minflt, rd->pages, hist_pct(rd->lat, 0.99));
	}
	if (r->wl == 'e') {
		const struct hist *c = r->lat_free;
		printf("    critical from the backup: alloc ns p50 %" PRIu64 " p99 %" PRIu64 " p99.9 %" PRIu64
		       "; p99 ratio to the healthy primary %.2f\n",
		       hist_pct(c, 0.5), hist_pct(c, 0.99), hist_pct(c, 0.999),
		       (double)hist_pct(c, 0.99) / (double)(hist_pct(h, 0.99) ? hist_pct(h, 0.99) : 1));
	}
	if (r->verify_errors || r->alloc_failures || r->free_errors)
		printf("    ERRORS: %" PRIu64 " verify, %" PRIu64 " alloc failures, %" PRIu64 " free errors\n",
		       r->verify_errors, r->alloc_failures, r->free_errors);
	printf("    RSS: peak %.1f MiB (VmHWM %.1f MiB), %.1f MiB at the start, %.1f MiB at the end; %u samples "
	       "every %u ms\n",
	       (double)r->rss.peak_kib / 1024.0, (double)r->rss.hwm_kib / 1024.0, (double)r->rss.start_kib / 1024.0,
	       (double)r->rss.end_kib / 1024.0, r->rss.n, r->rss.interval_ms);
	if (r->kp_stats)
		printf("    kpool stats: %s\n", r->kp_stats);
	fflush(stdout);
}

static void result_free(struct result *r)
{
	free(r->lat_alloc);
	free(r->lat_free);
	for (int i = 0; i < r->nrounds; i++)
		free(r->rounds[i].lat);
	free(r->kp_stats);
}

/* ---- options and main ---------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kpbench [--alloc kpool|malloc] [--workload a|b|c|d|e|f|all] [--ops N]\n"
		"               [--seed S] [--conf STR] [--grow BYTES] [--rounds N] [--pin same|apart]\n"
		"               [--json]\n"
		"  --alloc     kpool (default), or malloc: the process's malloc/free, so\n"
		"              LD_PRELOAD=libjemalloc.so.2 etc. measures a peer\n"
		"  --workload  a: 16-256 B, 1000 live; b: 16 B-64 KiB log-uniform, 10000 live;\n"
		"              c: two threads, cross-thread frees; d: grow to 1 GiB touching\n"
		"              every page, free all, repeated; e: failover latency (kpool\n"
		"              only); f: buffers grown by realloc 4 KiB -> 16 MiB; all (default:\n"
		"              a, b, c, d, f)\n"
		"  --ops       operations (alloc+free pairs; reallocs for f); default a 50M,\n"
		"              b 10M, c 10M, f 20k\n"
		"  --seed      seed of the precomputed random slots and sizes (default 1)\n"
		"  --conf      kpool conf for every workload (default: none, kpool's own)\n"
		"  --grow      bytes per round of d, k/m/g suffixes (default 1g)\n"
		"  --rounds    rounds of d (default 3, at most %d)\n"
		"  --pin       c's two threads both on the first CPU the process may use\n"
		"              (same) or on its first two (apart); default: wherever the\n"
		"              scheduler puts them. c is bimodal on that placement: the\n"
		"              output's cross.same_cpu says which mode a run was in\n"
		"  --json      one JSON object per workload on stdout\n",
		MAX_ROUNDS);
}

static int parse_u64(const char *s, uint64_t *out, bool suffixes)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	uint64_t mul = 1;
	if (suffixes && *end) {
		switch (*end | 0x20) {
		case 'k': mul = 1ull << 10; break;
		case 'm': mul = 1ull << 20; break;
		case 'g': mul = 1ull << 30; break;
		default: return -1;
		}
		end++;
	}
	if (*end || (mul > 1 && v > UINT64_MAX / mul))
		return -1;
	*out = (uint64_t)v * mul;
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o, const char **workloads)
{
	static const struct option longopts[] = {
		{"alloc", required_argument, NULL, 'a'},
		{"workload", required_argument, NULL, 'w'},
		{"ops", required_argument, NULL, 'n'},
		{"seed", required_argument, NULL, 's'},
		{"conf", required_argument, NULL, 'c'},
		{"grow", required_argument, NULL, 'g'},
		{"rounds", required_argument, NULL, 'r'},
		{"json", no_argument, NULL, 'j'},
		{"pin", required_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'a':
			if (strcmp(optarg, "kpool") && strcmp(optarg, "malloc")) {
				fprintf(stderr, "kpbench: --alloc %s: use kpool or malloc\n", optarg);
				return -1;
			}
			g_use_kpool = !strcmp(optarg, "kpool");
			break;
		case 'w':
			if (strcmp(optarg, "all") && strspn(optarg, "abcdef,") != strlen(optarg)) {
				fprintf(stderr, "kpbench: --workload %s: use a, b, c, d, e (kpool only), f or all\n",
					optarg);
				return -1;
			}
			*workloads = strcmp(optarg, "all") ? optarg : "abcdf";
			break;
		case 'n':
		case 's':
		case 'g':
		case 'r':
			if (parse_u64(optarg, &v, c == 'g' || c == 'n') != 0 ||
			    (c == 'r' && (v < 1 || v > MAX_ROUNDS)) || (c == 'g' && v == 0)) {
				fprintf(stderr, "kpbench: bad value for --%s: %s\n",
					c == 'n'   ? "ops"
					: c == 's' ? "seed"
					: c == 'g' ? "grow"
						   : "rounds",
					optarg);
				return -1;
			}
			if (c == 'n')
				o->ops = v;
			else if (c == 's')
				o->seed = v;
			else if (c == 'g')
				o->grow = v;
			else
				o->rounds = (int)v;
			break;
		case 'c': o->conf = optarg; break;
		case 'p':
			if (strcmp(optarg, "same") && strcmp(optarg, "apart")) {
				fprintf(stderr, "kpbench: --pin %s: use same or apart\n", optarg);
				return -1;
			}
			o->pin = optarg[0];
			break;
		case 'j': o->json = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kpbench: unexpected argument: %s\n", argv[optind]);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = {.seed = 1, .grow = 1ull << 30, .rounds = 3};
	const char *workloads = "abcdf";
	g_use_kpool = true;
	if (parse_opts(argc, argv, &o, &workloads) != 0)
		return 2;
	uint64_t clock_ns = clock_cost_ns();
	int rc = 0;
	for (const char *w = workloads; *w; w++) {
		if (*w == ',')
			continue;
		struct result r = {.wl = *w};
		atomic_store(&g_free_errors, 0);
		rss_start(&r.rss);
		int err = *w == 'a'   ? run_a(&r, &o)
			  : *w == 'b' ? run_b(&r, &o)
			  : *w == 'c' ? run_c(&r, &o)
			  : *w == 'e' ? run_e(&r, &o)
			  : *w == 'f' ? run_f(&r, &o)
				      : run_d(&r, &o);
		rss_stop(&r.rss);
		r.free_errors = atomic_load(&g_free_errors);
		if (err) {
			fprintf(stderr, "kpbench: workload %c failed\n", *w);
			rc = 1;
		} else {
			if (o.json)
				print_json(&r, clock_ns);
			else
				print_text(&r, clock_ns);
			if (r.verify_errors || r.alloc_failures || r.free_errors)
				rc = 1;
		}
		result_free(&r);
	}
	return rc;
}

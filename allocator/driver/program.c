/*
 * program.c - the driver's program: key=value lines, expanded by the driver.
 *
 *   name=steady-small
 *   allocator=kpool            kpool | malloc (the process's, for LD_PRELOAD peers)
 *   conf=primary_initial:1m    kp_create conf, verbatim
 *   faults=mmap@p=0.01@seed=3  kp_fault_inject spec, verbatim
 *   ops=alloc:60,free:30,realloc:10    weights of alloc free realloc calloc
 *                                      aligned xfree touch verify
 *   size=uniform:16:256        fixed:N | uniform:LO:HI | loguniform:LO:HI |
 *                              lognormal:MEDIAN:SIGMA[:LO:HI] | list:N@W,N@W...
 *   realloc_size=...           (default: size)
 *   align=64                   for aligned ops
 *   working_set=1000           live blocks per thread, at most
 *   count=1000000              ops per thread; or duration_ms=2000
 *   seed=1  threads=2  critical=0.1  sample=1  outliers=32
 *   verify=full                full | ends | none
 *   rate=0                     ops/s per thread (0: flat out)
 *   timer=auto                 auto (tsc where the kernel's clocksource is the invariant
 *                              TSC, else clock) | clock (CLOCK_MONOTONIC) | tsc (rdtsc, calibrated)
 *   interfere=mmap,rate=1000,size=1m,threads=1,mode=thread   (repeatable)
 *   timeline_ms=50 progress_ms=250
 *   stray_every=N overrun_every=N hang_at=N crash_at=N   (planted bugs)
 *
 * Sizes take k/m/g suffixes.
 */
#include "kpdriver.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *const kpd_op_names[KPD_OP__COUNT] = {
	"alloc", "free", "realloc", "calloc", "aligned", "xfree", "touch", "verify",
};

const char *const kpd_kind_names[KPD_K__COUNT] = {
	"alloc", "free", "realloc", "calloc", "aligned", "free_remote", "touch", "verify", "critical",
};

const char *const kpd_if_names[KPD_IF__COUNT] = {
	"mmap", "madvise", "faults", "mprotect", "brk", "fsync", "fork", "getpid", "yield",
};

void kpd_program_defaults(struct kpd_program *p)
{
	memset(p, 0, sizeof(*p));
	strcpy(p->name, "unnamed");
	p->use_kpool = true;
	p->weight[KPD_OP_ALLOC] = 1;
	p->size = (struct kpd_dist){.kind = KPD_D_UNIFORM, .lo = 16, .hi = 256};
	p->realloc_size = p->size;
	p->align = 64;
	p->working_set = 1000;
	p->ops = 1000000;
	p->seed = 1;
	p->threads = 1;
	p->sample = 1;
	p->outliers = 32;
	p->verify = KPD_VERIFY_FULL;
	p->timer_tsc = p->timer_auto = true; /* the TSC where it is behind CLOCK_MONOTONIC */
	p->timeline_ms = 50;		     /* 20 samples a second: a curve, at no measurable cost */
	p->progress_ms = 250;		     /* four lines a second: a live figure, not a flood */
}

/* ---- values --------------------------------------------------------------------- */

struct perr {
	char *buf;
	size_t len;
	unsigned line;
	const char *key;
};

static int fail(struct perr *e, const char *fmt, ...)
{
	int n = snprintf(e->buf, e->len, "line %u: %s: ", e->line, e->key);
	va_list ap;
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < e->len)
		vsnprintf(e->buf + n, e->len - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* An unsigned number with an optional k/m/g suffix; the whole string. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno)
		return -1;
	unsigned shift = 0;
	switch (tolower((unsigned char)*end)) {
	case 'k':
		shift = 10;
		end++;
		break;
	case 'm':
		shift = 20;
		end++;
		break;
	case 'g':
		shift = 30;
		end++;
		break;
	default: break;
	}
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

static int size_field(struct perr *e, const char *s, uint64_t *out)
{
	if (parse_size(s, out) != 0)
		return fail(e, "'%s' is not a size (a number with an optional k/m/g suffix)", s);
	return 0;
}

/* Split s at sep into at most max fields (in place). */
static unsigned split(char *s, char sep, char **f, unsigned max)
{
	unsigned n = 0;
	while (n < max) {
		f[n++] = s;
		char *c = strchr(s, sep);
		if (!c)
			break;
		*c = 0;
		s = c + 1;
	}
	return n;
}

/* Sizes are kept in 32 bits in the step table: 4 GiB is the ceiling. */
#define SIZE_CEIL 0xffffffffull

static int parse_dist(struct perr *e, char *s, struct kpd_dist *d)
{
	char *f[6];
	memset(d, 0, sizeof(*d));
	if (strncmp(s, "list:", 5) == 0) {
		char *items[KPD_MAX_LIST + 1];
		unsigned n = split(s + 5, ',', items, KPD_MAX_LIST + 1);
		if (n > KPD_MAX_LIST)
			return fail(e, "a list holds at most %d sizes", KPD_MAX_LIST);
		double total = 0;
		for (unsigned i = 0; i < n; i++) {
			char *w = strchr(items[i], '@');
			double wt = 1;
			if (w) {
				*w++ = 0;
				if (parse_double(w, &wt) != 0 || wt < 0)
					return fail(e, "weight '%s' is not a number >= 0", w);
			}
			if (size_field(e, items[i], &d->v[i]) != 0)
				return -1;
			if (d->v[i] > SIZE_CEIL)
				return fail(e, "size %s is above 4g", items[i]);
			total += wt;
			d->w[i] = total;
		}
		if (total <= 0)
			return fail(e, "the list's weights add up to 0");
		for (unsigned i = 0; i < n; i++)
			d->w[i] /= total;
		d->kind = KPD_D_LIST;
		d->n = n;
		return 0;
	}
	unsigned n = split(s, ':', f, 6);
	if (strcmp(f[0], "fixed") == 0 && n == 2) {
		d->kind = KPD_D_FIXED;
		if (size_field(e, f[1], &d->lo) != 0)
			return -1;
		d->hi = d->lo;
	} else if ((strcmp(f[0], "uniform") == 0 || strcmp(f[0], "loguniform") == 0) && n == 3) {
		d->kind = f[0][0] == 'u' ? KPD_D_UNIFORM : KPD_D_LOGUNIFORM;
		if (size_field(e, f[1], &d->lo) != 0 || size_field(e, f[2], &d->hi) != 0)
			return -1;
		if (d->lo > d->hi)
			return fail(e, "low %s is above high %s", f[1], f[2]);
		if (d->kind == KPD_D_LOGUNIFORM && d->lo == 0)
			return fail(e, "loguniform needs a low bound of at least 1");
	} else if (strcmp(f[0], "lognormal") == 0 && (n == 3 || n == 5)) {
		d->kind = KPD_D_LOGNORMAL;
		uint64_t median;
		if (size_field(e, f[1], &median) != 0)
			return -1;
		d->median = (double)median;
		if (parse_double(f[2], &d->sigma) != 0 || d->sigma < 0)
			return fail(e, "sigma '%s' is not a number >= 0", f[2]);
		d->lo = 1;
		d->hi = 64ull << 20;
		if (n == 5 && (size_field(e, f[3], &d->lo) != 0 || size_field(e, f[4], &d->hi) != 0))
			return -1;
		if (median == 0 || d->lo > d->hi)
			return fail(e, "needs median >= 1 and low <= high");
	} else {
		return fail(e,
			    "'%s' is not a distribution: fixed:N, uniform:LO:HI, loguniform:LO:HI, "
			    "lognormal:MEDIAN:SIGMA[:LO:HI] or list:N@W,...",
			    f[0]);
	}
	if (d->hi > SIZE_CEIL)
		return fail(e, "sizes above 4g are not supported");
	return 0;
}

uint64_t kpd_dist_draw(const struct kpd_dist *d, uint64_t *rng)
{
	uint64_t r = kpd_splitmix(rng);
	switch (d->kind) {
	case KPD_D_FIXED: return d->lo;
	case KPD_D_UNIFORM: return d->lo + r % (d->hi - d->lo + 1);
	case KPD_D_LOGUNIFORM: {
		double x = (double)d->lo * pow((double)(d->hi + 1) / (double)d->lo, kpd_unit(r));
		uint64_t n = (uint64_t)x;
		return n < d->lo ? d->lo : n > d->hi ? d->hi : n;
	}
	case KPD_D_LOGNORMAL: {
		/* Box-Muller: one normal from two uniforms. */
		double u1 = kpd_unit(r), u2 = kpd_unit(kpd_splitmix(rng));
		double z = sqrt(-2.0 * log(u1 > 0 ? u1 : 1e-300)) * cos(2 * M_PI * u2);
		double x = d->median * exp(d->sigma * z);
		uint64_t n = x > 1e18 ? d->hi : (uint64_t)x;
		return n < d->lo ? d->lo : n > d->hi ? d->hi : n;
	}
	case KPD_D_LIST: {
		double u = kpd_unit(r);
		for (unsigned i = 0; i < d->n; i++)
			if (u < d->w[i])
				return d->v[i];
		return d->v[d->n - 1];
	}
	}
	return d->lo;
}

static int parse_ops(struct perr *e, char *s, double *w)
{
	char *items[KPD_OP__COUNT + 1];
	unsigned n = split(s, ',', items, KPD_OP__COUNT + 1);
	double total = 0;
	memset(w, 0, sizeof(double) * KPD_OP__COUNT);
	for (unsigned i = 0; i < n; i++) {
		char *c = strchr(items[i], ':');
		if (!c)
			return fail(e, "'%s' is not OP:WEIGHT", items[i]);
		*c++ = 0;
		int op = -1;
		for (int k = 0; k < KPD_OP__COUNT; k++)
			if (strcmp(items[i], kpd_op_names[k]) == 0)
				op = k;
		if (op < 0)
			return fail(e,
				    "unknown op '%s' (allowed: alloc, free, realloc, calloc, aligned, "
				    "xfree, touch, verify)",
				    items[i]);
		if (parse_double(c, &w[op]) != 0 || w[op] < 0)
			return fail(e, "weight '%s' of %s is not a number >= 0", c, items[i]);
		total += w[op];
	}
	if (total <= 0)
		return fail(e, "the weights add up to 0");
	return 0;
}

static int parse_interf(struct perr *e, char *s, struct kpd_program *p)
{
	if (p->ninterf >= KPD_MAX_INTERF)
		return fail(e, "at most %d interference entries", KPD_MAX_INTERF);
	struct kpd_interf *f = &p->interf[p->ninterf];
	char *items[8];
	unsigned n = split(s, ',', items, 8);
	int kind = -1;
	for (int k = 0; k < KPD_IF__COUNT; k++)
		if (strcmp(items[0], kpd_if_names[k]) == 0)
			kind = k;
	if (kind < 0)
		return fail(e,
			    "unknown interference '%s' (allowed: mmap, madvise, faults, mprotect, brk, "
			    "fsync, fork, getpid, yield)",
			    items[0]);
	*f = (struct kpd_interf){.kind = (enum kpd_if_kind)kind, .size = 1 << 20, .threads = 1};
	for (unsigned i = 1; i < n; i++) {
		char *v = strchr(items[i], '=');
		if (!v)
			return fail(e, "'%s' is not key=value", items[i]);
		*v++ = 0;
		uint64_t u;
		if (strcmp(items[i], "rate") == 0) {
			if (parse_double(v, &f->rate) != 0 || f->rate < 0)
				return fail(e, "rate '%s' is not a number >= 0", v);
		} else if (strcmp(items[i], "size") == 0) {
			if (size_field(e, v, &f->size) != 0)
				return -1;
			if (f->size < 4096)
				f->size = 4096;
		} else if (strcmp(items[i], "threads") == 0) {
			if (parse_size(v, &u) != 0 || u < 1 || u > 16)
				return fail(e, "threads '%s' is not 1..16", v);
			f->threads = (unsigned)u;
		} else if (strcmp(items[i], "mode") == 0) {
			if (strcmp(v, "thread") && strcmp(v, "process"))
				return fail(e, "mode '%s' is not thread or process", v);
			f->process = v[0] == 'p';
		} else {
			return fail(e, "unknown interference key '%s' (allowed: rate, size, threads, mode)", items[i]);
		}
	}
	p->ninterf++;
	return 0;
}

static int copy_str(struct perr *e, char *dst, size_t len, const char *v)
{
	if (strlen(v) >= len)
		return fail(e, "longer than %zu characters", len - 1);
	strcpy(dst, v);
	return 0;
}

static int u64_field(struct perr *e, const char *v, uint64_t *out, uint64_t lo, uint64_t hi)
{
	if (size_field(e, v, out) != 0)
		return -1;
	if (*out < lo || *out > hi)
		return fail(e, "%s is outside %llu..%llu", v, (unsigned long long)lo, (unsigned long long)hi);
	return 0;
}

static int parse_line(struct perr *e, char *key, char *v, struct kpd_program *p)
{
	uint64_t u;
	e->key = key;
	if (!strcmp(key, "name"))
		return copy_str(e, p->name, sizeof(p->name), v);
	if (!strcmp(key, "allocator")) {
		if (strcmp(v, "kpool") && strcmp(v, "malloc"))
			return fail(e, "'%s' is not kpool or malloc", v);
		p->use_kpool = v[0] == 'k';
		return 0;
	}
	if (!strcmp(key, "conf"))
		return copy_str(e, p->conf, sizeof(p->conf), v);
	if (!strcmp(key, "faults"))
		return copy_str(e, p->faults, sizeof(p->faults), v);
	if (!strcmp(key, "ops"))
		return parse_ops(e, v, p->weight);
	if (!strcmp(key, "size")) {
		if (parse_dist(e, v, &p->size) != 0)
			return -1;
		p->realloc_size = p->size; /* unless realloc_size follows */
		return 0;
	}
	if (!strcmp(key, "realloc_size"))
		return parse_dist(e, v, &p->realloc_size);
	if (!strcmp(key, "align")) {
		if (u64_field(e, v, &p->align, 1, 4096) != 0)
			return -1;
		if (p->align & (p->align - 1))
			return fail(e, "%s is not a power of two", v);
		return 0;
	}
	if (!strcmp(key, "working_set"))
		return u64_field(e, v, &p->working_set, 1, 1ull << 26);
	if (!strcmp(key, "count"))
		return u64_field(e, v, &p->ops, 0, UINT64_MAX);
	if (!strcmp(key, "duration_ms")) {
		if (u64_field(e, v, &p->duration_ms, 1, 86400000) != 0)
			return -1;
		p->ops = 0;
		return 0;
	}
	if (!strcmp(key, "seed"))
		return u64_field(e, v, &p->seed, 0, UINT64_MAX);
	if (!strcmp(key, "threads")) {
		if (u64_field(e, v, &u, 1, KPD_MAX_THREADS) != 0)
			return -1;
		p->threads = (unsigned)u;
		return 0;
	}
	if (!strcmp(key, "critical")) {
		if (parse_double(v, &p->critical) != 0 || p->critical < 0 || p->critical > 1)
			return fail(e, "'%s' is not a share between 0 and 1", v);
		return 0;
	}
	if (!strcmp(key, "sample")) {
		if (u64_field(e, v, &u, 1, 1u << 30) != 0)
			return -1;
		p->sample = (unsigned)u;
		return 0;
	}
	if (!strcmp(key, "outliers")) {
		if (u64_field(e, v, &u, 0, KPD_MAX_OUTLIERS) != 0)
			return -1;
		p->outliers = (unsigned)u;
		return 0;
	}
	if (!strcmp(key, "verify")) {
		if (!strcmp(v, "full"))
			p->verify = KPD_VERIFY_FULL;
		else if (!strcmp(v, "ends"))
			p->verify = KPD_VERIFY_ENDS;
		else if (!strcmp(v, "none"))
			p->verify = KPD_VERIFY_NONE;
		else
			return fail(e, "'%s' is not full, ends or none", v);
		return 0;
	}
	if (!strcmp(key, "rate")) {
		if (parse_double(v, &p->rate) != 0 || p->rate < 0)
			return fail(e, "'%s' is not a number >= 0", v);
		return 0;
	}
	if (!strcmp(key, "timer")) {
		if (strcmp(v, "clock") && strcmp(v, "tsc") && strcmp(v, "auto"))
			return fail(e, "'%s' is not auto, clock or tsc", v);
		p->timer_tsc = v[0] != 'c';
		p->timer_auto = v[0] == 'a';
		return 0;
	}
	if (!strcmp(key, "interfere"))
		return parse_interf(e, v, p);
	if (!strcmp(key, "timeline_ms") || !strcmp(key, "progress_ms")) {
		if (u64_field(e, v, &u, 0, 3600000) != 0)
			return -1;
		*(key[0] == 't' ? &p->timeline_ms : &p->progress_ms) = (unsigned)u;
		return 0;
	}
	if (!strcmp(key, "stray_every"))
		return u64_field(e, v, &p->stray_every, 0, UINT64_MAX);
	if (!strcmp(key, "overrun_every"))
		return u64_field(e, v, &p->overrun_every, 0, UINT64_MAX);
	if (!strcmp(key, "hang_at"))
		return u64_field(e, v, &p->hang_at, 0, UINT64_MAX);
	if (!strcmp(key, "crash_at"))
		return u64_field(e, v, &p->crash_at, 0, UINT64_MAX);
	return fail(e, "unknown key (allowed: name allocator conf faults ops size realloc_size align "
		       "working_set count duration_ms seed threads critical sample outliers verify rate "
		       "timer interfere timeline_ms progress_ms stray_every overrun_every hang_at crash_at)");
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = 0;
	return s;
}

int kpd_program_parse(struct kpd_program *p, const char *text, char *err, size_t errlen)
{
	struct perr e = {.buf = err, .len = errlen, .key = "?"};
	char *copy = strdup(text), *save = NULL;
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int rc = 0;
	unsigned lineno = 0;
	/* strtok_r skips empty lines, so count them by hand. */
	for (char *line = copy; line && rc == 0; line = save) {
		lineno++;
		save = strchr(line, '\n');
		if (save)
			*save++ = 0;
		char *hash = strchr(line, '#');
		if (hash && (hash == line || isspace((unsigned char)hash[-1])))
			*hash = 0;
		char *s = trim(line);
		if (!*s)
			continue;
		e.line = lineno;
		char *eq = strchr(s, '=');
		if (!eq) {
			e.key = s;
			rc = fail(&e, "not key=value");
			break;
		}
		*eq = 0;
		rc = parse_line(&e, trim(s), trim(eq + 1), p);
	}
	free(copy);
	if (rc == 0 && p->ops == 0 && p->duration_ms == 0) {
		snprintf(err, errlen, "count=0 needs duration_ms");
		rc = -1;
	}
	return rc;
}

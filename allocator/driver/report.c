/*
 * report.c - the result document: one JSON object on one line.
 *
 * Histograms carry their layout and only the non-empty buckets, as
 * [index, count] pairs; bucket i covers [low(i), high(i)] ns (the layout
 * gives sub_bits and max_exp, so a reader can rebuild the bounds, and merging
 * runs is a sum of counts by index).
 */
#include "kpdriver.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

void kpd_json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20 || *p >= 0x7f)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void hist_json(FILE *out, const struct kpd_hist *h)
{
	fprintf(out,
		"{\"count\":%llu,\"min\":%llu,\"max\":%llu,\"mean\":%.1f,\"p50\":%llu,"
		"\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,\"buckets\":[",
		(unsigned long long)h->count, (unsigned long long)(h->count ? h->min : 0), (unsigned long long)h->max,
		h->count ? (double)h->sum / (double)h->count : 0.0, (unsigned long long)kpd_hist_pct(h, 0.5),
		(unsigned long long)kpd_hist_pct(h, 0.9), (unsigned long long)kpd_hist_pct(h, 0.99),
		(unsigned long long)kpd_hist_pct(h, 0.999));
	bool first = true;
	for (unsigned i = 0; i < KPD_H_BUCKETS; i++) {
		if (!h->b[i])
			continue;
		fprintf(out, "%s[%u,%llu]", first ? "" : ",", i, (unsigned long long)h->b[i]);
		first = false;
	}
	fprintf(out, "]}");
}

static void counters_json(FILE *out, const struct kpd_run *run)
{
	const struct kpd_counters *c = &run->c;
	static const char *const codes[8] = {
		"",	      "KP_EINVAL", "KP_ENOTOURS",  "KP_EDOUBLEFREE", "KP_ECORRUPT",
		"KP_EDENIED", "KP_ENOMEM", "KP_EOVERFLOW",
	};
	fprintf(out, "\"counters\":{\"ops\":%llu,\"steps\":%llu,\"timed\":%llu,\"by_op\":{", (unsigned long long)c->ops,
		(unsigned long long)c->steps, (unsigned long long)c->timed);
	for (int k = 0; k < KPD_OP__COUNT; k++)
		fprintf(out, "%s\"%s\":%llu", k ? "," : "", kpd_op_names[k], (unsigned long long)c->by_op[k]);
	uint64_t free_errors = 0;
	fprintf(out, "},\"free_errors\":{");
	bool first = true;
	for (int k = 1; k < 8; k++) {
		free_errors += c->free_errors[k];
		if (c->free_errors[k]) {
			fprintf(out, "%s\"%s\":%llu", first ? "" : ",", codes[k],
				(unsigned long long)c->free_errors[k]);
			first = false;
		}
	}
	fprintf(out,
		"},\"free_errors_total\":%llu,\"alloc_failures\":%llu,\"critical_allocs\":%llu,"
		"\"critical_failures\":%llu,\"critical_denied\":%llu,\"realloc_failures\":%llu,"
		"\"verify_errors\":%llu,\"zero_errors\":%llu,\"remote_sent\":%llu,"
		"\"remote_local\":%llu,\"bytes_allocated\":%llu,"
		"\"planted\":{\"stray\":%llu,\"overrun\":%llu}",
		(unsigned long long)free_errors, (unsigned long long)c->alloc_failures,
		(unsigned long long)c->critical_allocs, (unsigned long long)c->critical_failures,
		(unsigned long long)c->critical_denied, (unsigned long long)c->realloc_failures,
		(unsigned long long)c->verify_errors, (unsigned long long)c->zero_errors,
		(unsigned long long)c->remote_sent, (unsigned long long)c->remote_local,
		(unsigned long long)c->bytes_allocated, (unsigned long long)c->planted_stray,
		(unsigned long long)(run->prog->overrun_every ? c->planted_overrun / run->prog->overrun_every : 0));
	uint64_t calls[KPD_IF__COUNT], errors;
	kpd_interfere_counts(run, calls, &errors);
	fprintf(out, ",\"interference\":{");
	for (int k = 0; k < KPD_IF__COUNT; k++)
		fprintf(out, "\"%s\":%llu,", kpd_if_names[k], (unsigned long long)calls[k]);
	fprintf(out, "\"errors\":%llu}", (unsigned long long)errors);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	fprintf(out,
		",\"rusage\":{\"utime_s\":%.3f,\"stime_s\":%.3f,\"maxrss_kb\":%ld,"
		"\"minflt\":%ld,\"majflt\":%ld,\"nvcsw\":%ld,\"nivcsw\":%ld}}",
		(double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss, ru.ru_minflt,
		ru.ru_majflt, ru.ru_nvcsw, ru.ru_nivcsw);
}

static void outliers_json(FILE *out, const struct kpd_run *run)
{
	fprintf(out, "\"outliers\":[");
	for (unsigned i = 0; i < run->noutliers; i++) {
		const struct kpd_outlier *o = &run->outliers[i];
		fprintf(out,
			"%s{\"lat_ns\":%llu,\"t_ms\":%.3f,\"thread\":%u,\"index\":%llu,"
			"\"kind\":\"%s\",\"size\":%llu,\"grow\":%s,\"backup\":%s,"
			"\"interference\":%s}",
			i ? "," : "", (unsigned long long)o->lat_ns, (double)o->t_ns / 1e6, o->thread,
			(unsigned long long)o->index, kpd_kind_names[o->kind], (unsigned long long)o->size,
			o->grow ? "true" : "false", o->backup ? "true" : "false", o->interf ? "true" : "false");
	}
	fprintf(out, "],\"damage\":[");
	for (unsigned i = 0; i < run->ndamage; i++) {
		const struct kpd_damage *d = &run->damage[i];
		fprintf(out,
			"%s{\"thread\":%u,\"index\":%llu,\"size\":%llu,\"offset\":%llu,"
			"\"want\":%u,\"got\":%u,\"when\":\"%s\"}",
			i ? "," : "", d->thread, (unsigned long long)d->index, (unsigned long long)d->size,
			(unsigned long long)d->offset, d->want, d->got, d->when);
	}
	fputc(']', out);
}

void kpd_report(FILE *out, const struct kpd_run *run)
{
	const struct kpd_program *p = run->prog;
	double loop_s = run->loop_end > run->loop_start ? (double)(run->loop_end - run->loop_start) / 1e9 : 0.0;
	const char *preload = getenv("LD_PRELOAD");
	fprintf(out, "{\"kpdrive\":1,\"name\":");
	kpd_json_string(out, p->name);
	fprintf(out, ",\"allocator\":\"%s\",\"preload\":", p->use_kpool ? "kpool" : "malloc");
	kpd_json_string(out, preload ? preload : "");
	fprintf(out, ",\"seed\":%llu,\"threads\":%u,\"sample\":%u,\"ok\":%s,\"error\":", (unsigned long long)p->seed,
		p->threads, p->sample, run->error[0] ? "false" : "true");
	kpd_json_string(out, run->error);
	fprintf(out, ",\"timer\":\"%s\",\"timer_note\":", kpd_tsc_on ? "tsc" : "clock_monotonic");
	kpd_json_string(out, run->timer_note);
	fprintf(out,
		",\"clock_ns\":%llu,\"t0_mono_ns\":%llu,\"loop_start_mono_ns\":%llu,"
		"\"loop_end_mono_ns\":%llu,\"loop_s\":%.6f,\"ops_per_s\":%.0f,"
		"\"loop_cpu_s\":%.6f,\"ops_per_cpu_s\":%.0f,",
		(unsigned long long)run->clock_ns, (unsigned long long)run->t0,
		(unsigned long long)(run->loop_start == UINT64_MAX ? 0 : run->loop_start),
		(unsigned long long)run->loop_end, loop_s, loop_s > 0 ? (double)run->c.ops / loop_s : 0.0,
		(double)run->loop_cpu_ns / 1e9,
		run->loop_cpu_ns ? (double)run->c.ops * 1e9 / (double)run->loop_cpu_ns : 0.0);
	fprintf(out, "\"hist\":{\"layout\":{\"sub_bits\":%d,\"max_exp\":%d,\"unit\":\"ns\"}", KPD_H_SUB_BITS,
		KPD_H_MAX_EXP);
	for (int k = 0; k < KPD_K__COUNT; k++) {
		if (!run->hist[k] || !run->hist[k]->count)
			continue;
		fprintf(out, ",\"%s\":", kpd_kind_names[k]);
		hist_json(out, run->hist[k]);
	}
	fprintf(out, "},");
	counters_json(out, run);
	fputc(',', out);
	outliers_json(out, run);
	fputc(',', out);
	kpd_monitor_report(out, run);
	fprintf(out, ",\"kpool_stats\":%s}\n", run->stats_json ? run->stats_json : "null");
}

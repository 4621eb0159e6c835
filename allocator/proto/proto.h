/*
 * proto.h - what the prototype exports beyond the C allocation API: the
 * counters its integrity test reads.
 */
#ifndef PROTO_H
#define PROTO_H
#include <stdint.h>

enum {
	PROTO_ERR_INVALID,     /* free of a pointer that is no block start of ours */
	PROTO_ERR_DOUBLE_FREE, /* free of a block that is free */
	PROTO_ERR_OVERFLOW,    /* the canary after the request changed */
	PROTO_ERR_KINDS
};

uint64_t proto_errors(int kind);    /* violations found so far, by kind */
uint64_t proto_os_calls(void);	    /* system calls made so far (mmap, munmap, mprotect, getrandom) */
void proto_set_contain(int on);	    /* 1: count and leak the block instead of abort() */
void *proto_meta_of(const void *p); /* the metadata of p's segment, or NULL */
#endif

/*
 * event_producer.c - a native producer of events for benchmarks/bench_events.py
 * (test-only, not part of libboxlite or its ABI): posts one completion per
 * token through boxlite_runtime_post from the calling thread, waiting while
 * the queue is full, as a native producer (the reactor) would.
 *
 * The benchmark compiles it into a shared object and hands it the address
 * of boxlite_runtime_post, so it links against nothing.
 */
#include <stddef.h>
#include <stdint.h>

#include "boxlite.h"

typedef int (*post_fn)(boxlite_runtime *rt, boxlite_done_cb cb, void *user_data, int status,
		       int timeout_ms);

/* Returns how many were posted: n, unless a post failed (its status is then
 * in *status). */
size_t bl_produce_events(post_fn post, boxlite_runtime *rt, boxlite_done_cb cb,
			 const uintptr_t *tokens, size_t n, int *status)
{
	*status = BOXLITE_OK;
	for (size_t i = 0; i < n; i++) {
		int rc = post(rt, cb, (void *)tokens[i], BOXLITE_OK, -1);
		if (rc != BOXLITE_OK) {
			*status = rc;
			return i;
		}
	}
	return n;
}

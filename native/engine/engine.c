/*
 * engine.c - the engines, by name (engine.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"

/* The first is the default. */
static const struct bl_engine *const ENGINES[] = {&bl_engine_ns, &bl_engine_vm};

const struct bl_engine *bl_engine_find(const char *name, bl_error *e)
{
	if (!name || !name[0])
		return ENGINES[0];
	char known[128] = "";
	size_t used = 0;
	for (size_t i = 0; i < sizeof ENGINES / sizeof ENGINES[0]; i++) {
		if (strcmp(ENGINES[i]->name, name) == 0)
			return ENGINES[i];
		int n = snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
				 ENGINES[i]->name);
		if (n > 0 && (size_t)n < sizeof known - used)
			used += (size_t)n;
	}
	bl_error_set(e, EINVAL, "unknown engine '%s' (known: %s)", name, known);
	return NULL;
}

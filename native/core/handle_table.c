/* handle_table.c - generation-checked handle slots; see handle_table.h. */
#include "handle_table.h"

#include <stdlib.h>
#include <string.h>

void bl_handles_init(struct bl_handle_table *t) { memset(t, 0, sizeof *t); }

void bl_handles_destroy(struct bl_handle_table *t)
{
	free(t->slots);
	memset(t, 0, sizeof *t);
}

static int grow(struct bl_handle_table *t)
{
	uint32_t cap = t->cap ? t->cap * 2 : 64;
	if (cap <= t->cap)
		return -1;
	struct bl_handle_slot *s = realloc(t->slots, (size_t)cap * sizeof *s);
	if (!s)
		return -1;
	memset(s + t->cap, 0, (size_t)(cap - t->cap) * sizeof *s);
	t->slots = s;
	t->cap = cap;
	return 0;
}

uint64_t bl_handles_add(struct bl_handle_table *t, enum bl_handle_kind kind, void *object)
{
	uint32_t idx;
	if (t->free_head) {
		idx = t->free_head - 1;
		t->free_head = t->slots[idx].next_free;
	} else {
		if (t->len == t->cap && grow(t) < 0)
			return 0;
		idx = t->len++;
	}
	struct bl_handle_slot *s = &t->slots[idx];
	if (s->generation == 0)
		s->generation = 1;
	s->kind = kind;
	s->object = object;
	s->next_free = 0;
	t->live++;
	return ((uint64_t)s->generation << 32) | (uint64_t)(idx + 1);
}

static struct bl_handle_slot *find(const struct bl_handle_table *t, uint64_t handle,
				   enum bl_handle_kind kind)
{
	uint32_t idx1 = (uint32_t)(handle & 0xffffffffu);
	uint32_t gen = (uint32_t)(handle >> 32);
	if (idx1 == 0 || idx1 > t->len)
		return NULL;
	struct bl_handle_slot *s = &t->slots[idx1 - 1];
	if (s->kind != kind || s->generation != gen)
		return NULL;
	return s;
}

void *bl_handles_get(const struct bl_handle_table *t, uint64_t handle, enum bl_handle_kind kind)
{
	struct bl_handle_slot *s = find(t, handle, kind);
	return s ? s->object : NULL;
}

void *bl_handles_remove(struct bl_handle_table *t, uint64_t handle, enum bl_handle_kind kind)
{
	struct bl_handle_slot *s = find(t, handle, kind);
	if (!s)
		return NULL;
	void *object = s->object;
	uint32_t idx = (uint32_t)(s - t->slots);
	s->object = NULL;
	s->kind = BL_HANDLE_FREE;
	/* Skip generation 0 on wrap so no handle ever equals 0. */
	if (++s->generation == 0)
		s->generation = 1;
	s->next_free = t->free_head;
	t->free_head = idx + 1;
	t->live--;
	return object;
}

/*
 * handle_table.h - 64-bit handles for native objects.
 *
 * A handle is (generation << 32) | (slot index + 1).  Freeing a slot bumps its
 * generation, so a stale handle never matches a reused slot, and a handle that
 * was never issued finds nothing: both are refused without touching memory.
 * Not thread-safe: the runtime lock guards it.
 */
#ifndef BOXLITE_HANDLE_TABLE_H
#define BOXLITE_HANDLE_TABLE_H

#include <stddef.h>
#include <stdint.h>

enum bl_handle_kind { BL_HANDLE_FREE = 0, BL_HANDLE_BOX, BL_HANDLE_EXEC };

struct bl_handle_slot {
	uint32_t generation;
	uint32_t next_free; /* index + 1 of the next free slot, 0 ends the list */
	enum bl_handle_kind kind;
	void *object;
};

struct bl_handle_table {
	struct bl_handle_slot *slots;
	uint32_t len, cap;
	uint32_t free_head; /* index + 1, 0 when no free slot */
	uint32_t live;
};

void bl_handles_init(struct bl_handle_table *t);
void bl_handles_destroy(struct bl_handle_table *t);
/* Store object; returns its handle, or 0 when out of memory. */
uint64_t bl_handles_add(struct bl_handle_table *t, enum bl_handle_kind kind, void *object);
/* The object behind a live handle of that kind, or NULL. */
void *bl_handles_get(const struct bl_handle_table *t, uint64_t handle, enum bl_handle_kind kind);
/* Remove and return the object behind a live handle of that kind, or NULL. */
void *bl_handles_remove(struct bl_handle_table *t, uint64_t handle, enum bl_handle_kind kind);

#endif

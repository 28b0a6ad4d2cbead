/* Unit tests of the bounded event queue (native/event_queue.c). */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/event_queue.h"

static int delivered;

static void on_output(void *ud, int stream, const uint8_t *data, size_t len)
{
	(void)ud;
	(void)stream;
	(void)data;
	(void)len;
	delivered++;
}

static void on_done(void *ud, int status, const char *message)
{
	(void)ud;
	(void)status;
	(void)message;
	delivered++;
}

static struct bl_event *output_event(uint8_t byte)
{
	struct bl_event *ev = bl_event_output(on_output, NULL, BOXLITE_STDOUT, 1);
	CHECK(ev);
	ev->data[0] = byte;
	return ev;
}

static void test_fifo_order(void)
{
	struct bl_queue q;
	CHECK(bl_queue_init(&q, 8) == 0);
	for (uint8_t i = 0; i < 8; i++)
		CHECK(bl_queue_push_stream(&q, output_event(i), 0) == BOXLITE_OK);
	for (uint8_t i = 0; i < 8; i++) {
		int status;
		struct bl_event *ev = bl_queue_pop(&q, 0, &status);
		CHECK(ev && ev->data[0] == i);
		bl_event_free(ev);
	}
	int status = BOXLITE_OK;
	CHECK(bl_queue_pop(&q, 0, &status) == NULL && status == BOXLITE_ERR_TIMEOUT);
	bl_queue_destroy(&q);
}

static void test_full_queue_times_out_without_dropping(void)
{
	struct bl_queue q;
	CHECK(bl_queue_init(&q, 2) == 0);
	CHECK(bl_queue_push_stream(&q, output_event(1), 0) == BOXLITE_OK);
	CHECK(bl_queue_push_stream(&q, output_event(2), 0) == BOXLITE_OK);
	struct bl_event *extra = output_event(3);
	CHECK(bl_queue_push_stream(&q, extra, 20) == BOXLITE_ERR_TIMEOUT);
	bl_event_free(extra); /* refused: still ours */
	CHECK(q.count == 2);
	bl_queue_destroy(&q); /* frees the two undelivered events */
}

struct producer {
	struct bl_queue *q;
	int pushed;
	int rc;
};

static void *produce(void *arg)
{
	struct producer *p = arg;
	for (int i = 0; i < 1000; i++) {
		struct bl_event *ev = output_event((uint8_t)i);
		p->rc = bl_queue_push_stream(p->q, ev, -1);
		if (p->rc != BOXLITE_OK) {
			bl_event_free(ev);
			return NULL;
		}
		p->pushed++;
	}
	return NULL;
}

static void test_blocked_producer_resumes_in_order(void)
{
	struct bl_queue q;
	CHECK(bl_queue_init(&q, 3) == 0);
	struct producer p = {.q = &q};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, produce, &p) == 0);
	for (int i = 0; i < 1000; i++) {
		int status;
		struct bl_event *ev = bl_queue_pop(&q, -1, &status);
		CHECK(ev && ev->data[0] == (uint8_t)i);
		CHECK(q.count <= q.capacity);
		bl_event_free(ev);
	}
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(p.pushed == 1000 && p.rc == BOXLITE_OK);
	bl_queue_destroy(&q);
}

static void test_close_wakes_blocked_producer(void)
{
	struct bl_queue q;
	CHECK(bl_queue_init(&q, 1) == 0);
	struct producer p = {.q = &q};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, produce, &p) == 0);
	while (q.count < 1)
		usleep(1000);
	usleep(20000); /* the producer is now waiting for space */
	bl_queue_close(&q);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(p.rc == BOXLITE_ERR_RUNTIME_CLOSED && p.pushed == 1);
	bl_queue_destroy(&q);
}

static void test_terminal_push_past_capacity_and_close(void)
{
	struct bl_queue q;
	CHECK(bl_queue_init(&q, 1) == 0);
	CHECK(bl_queue_push_stream(&q, output_event(0), 0) == BOXLITE_OK);
	bl_queue_close(&q);
	struct bl_event *refused = output_event(1);
	CHECK(bl_queue_push_stream(&q, refused, -1) == BOXLITE_ERR_RUNTIME_CLOSED);
	bl_event_free(refused);
	struct bl_event *done = bl_event_done(on_done, NULL, BOXLITE_ERR_RUNTIME_CLOSED, "closed");
	CHECK(done);
	bl_queue_push_terminal(&q, done);
	CHECK(q.count == 2);
	int status;
	struct bl_event *ev;
	int popped = 0;
	while ((ev = bl_queue_pop(&q, 0, &status))) {
		bl_event_free(ev);
		popped++;
	}
	CHECK(popped == 2 && status == BOXLITE_ERR_RUNTIME_CLOSED);
	bl_queue_destroy(&q);
}

static void *release_later(void *arg)
{
	struct bl_queue *q = arg;
	usleep(20000);
	struct bl_event *done = bl_event_done(on_done, NULL, BOXLITE_OK, NULL);
	CHECK(done);
	bl_queue_push_terminal(q, done);
	bl_queue_release(q);
	return NULL;
}

static void test_hold_keeps_drain_open_until_release(void)
{
	struct bl_queue q;
	CHECK(bl_queue_init(&q, 4) == 0);
	bl_queue_hold(&q);
	bl_queue_close(&q);
	pthread_t t;
	CHECK(pthread_create(&t, NULL, release_later, &q) == 0);
	int status;
	struct bl_event *ev = bl_queue_pop(&q, -1, &status);
	CHECK(ev && ev->kind == BL_EV_DONE); /* the late completion was not stranded */
	bl_event_free(ev);
	CHECK(bl_queue_pop(&q, -1, &status) == NULL && status == BOXLITE_ERR_RUNTIME_CLOSED);
	CHECK(pthread_join(t, NULL) == 0);
	bl_queue_destroy(&q);
}

static void test_destroy_releases_undelivered_payloads(void)
{
	struct bl_queue q;
	CHECK(bl_queue_init(&q, 64) == 0);
	for (int i = 0; i < 32; i++) {
		struct bl_event *ev = bl_event_output(on_output, NULL, BOXLITE_STDERR, 4096);
		CHECK(ev);
		memset(ev->data, 'x', 4096);
		CHECK(bl_queue_push_stream(&q, ev, 0) == BOXLITE_OK);
		struct bl_event *d = bl_event_done(on_done, NULL, BOXLITE_OK, "message");
		CHECK(d);
		bl_queue_push_terminal(&q, d);
	}
	bl_queue_destroy(&q); /* AddressSanitizer's leak check proves the frees */
}

static void test_pop_many_takes_what_is_ready_in_order(void)
{
	struct bl_queue q;
	CHECK(bl_queue_init(&q, 16) == 0);
	for (uint8_t i = 0; i < 10; i++)
		CHECK(bl_queue_push_stream(&q, output_event(i), 0) == BOXLITE_OK);
	struct bl_event *out[16];
	int status;
	CHECK(bl_queue_pop_many(&q, out, 4, 0, &status) == 4 && status == BOXLITE_OK);
	CHECK(bl_queue_pop_many(&q, out + 4, 16, -1, &status) == 6 && q.count == 0);
	for (uint8_t i = 0; i < 10; i++) {
		CHECK(out[i]->data[0] == i && out[i]->next == NULL);
		bl_event_free(out[i]);
	}
	CHECK(bl_queue_pop_many(&q, out, 16, 10, &status) == 0 && status == BOXLITE_ERR_TIMEOUT);
	/* The queue works on after a batch emptied it (its tail was reset). */
	CHECK(bl_queue_push_stream(&q, output_event(42), 0) == BOXLITE_OK);
	CHECK(bl_queue_pop_many(&q, out, 16, 0, &status) == 1 && out[0]->data[0] == 42);
	bl_event_free(out[0]);
	bl_queue_close(&q);
	CHECK(bl_queue_pop_many(&q, out, 16, -1, &status) == 0);
	CHECK(status == BOXLITE_ERR_RUNTIME_CLOSED);
	bl_queue_destroy(&q);
}

struct one_push {
	struct bl_queue *q;
	uint8_t byte;
	int rc;
};

static void *push_one(void *arg)
{
	struct one_push *p = arg;
	struct bl_event *ev = output_event(p->byte);
	p->rc = bl_queue_push_stream(p->q, ev, -1);
	if (p->rc != BOXLITE_OK)
		bl_event_free(ev);
	return NULL;
}

/* A batch that frees k slots lets k blocked producers in, not one. */
static void test_pop_many_wakes_every_blocked_producer(void)
{
	enum { CAP = 4 };
	struct bl_queue q;
	CHECK(bl_queue_init(&q, CAP) == 0);
	for (uint8_t i = 0; i < CAP; i++)
		CHECK(bl_queue_push_stream(&q, output_event(i), 0) == BOXLITE_OK);
	struct one_push p[CAP];
	pthread_t t[CAP];
	for (int i = 0; i < CAP; i++) {
		p[i] = (struct one_push){.q = &q, .byte = (uint8_t)(100 + i), .rc = -1};
		CHECK(pthread_create(&t[i], NULL, push_one, &p[i]) == 0);
	}
	usleep(20000); /* they are now waiting for space */
	struct bl_event *out[CAP];
	int status;
	CHECK(bl_queue_pop_many(&q, out, CAP, 0, &status) == CAP);
	for (int i = 0; i < CAP; i++) {
		CHECK(out[i]->data[0] == i);
		bl_event_free(out[i]);
	}
	for (int i = 0; i < CAP; i++) /* joins only if each one was woken */
		CHECK(pthread_join(t[i], NULL) == 0 && p[i].rc == BOXLITE_OK);
	CHECK(q.count == CAP);
	bl_queue_destroy(&q);
}

int main(void)
{
	RUN(test_fifo_order);
	RUN(test_full_queue_times_out_without_dropping);
	RUN(test_blocked_producer_resumes_in_order);
	RUN(test_close_wakes_blocked_producer);
	RUN(test_terminal_push_past_capacity_and_close);
	RUN(test_hold_keeps_drain_open_until_release);
	RUN(test_destroy_releases_undelivered_payloads);
	RUN(test_pop_many_takes_what_is_ready_in_order);
	RUN(test_pop_many_wakes_every_blocked_producer);
	(void)delivered;
	return 0;
}

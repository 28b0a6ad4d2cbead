/*
 * fuzz_mux.c - a host mux (native/common/mux.c) fed random streams at its
 * port, as a hostile guest could send: frames with valid headers and random
 * fields, wrong ones, garbage, cut at random points across writes.  From a
 * fixed seed, so a failure repeats: `fuzz_mux [SEED [STREAMS]]`.
 *
 * The mux must never crash or read out of bounds (the SANITIZE=1 build
 * checks), either keep running or fail with a message, keep its port queue
 * bounded, and leave no fd behind.
 */
#include <stdlib.h>

#include "mux_peer.h"

#define STREAMS 2000
#define STREAM_MAX (256u * 1024u)
/* The port queue's bound: MUX_OUT_HIGH, then what one batch of events
 * may add (a chunk per channel, CREDIT and CLOSE frames). */
#define QUEUE_BOUND (MUX_OUT_HIGH + 8u * (MUX_DATA_CHUNK + 4u * MUX_HEADER_SIZE))

static uint64_t state;

static uint32_t rnd(void) /* xorshift64*: repeatable from the seed */
{
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return (uint32_t)((state * 2685821657736338717ull) >> 32);
}

static uint32_t pick(const uint32_t *v, size_t n) { return v[rnd() % n]; }

/* The host's channels: the spawner's connection, the main command's logs,
 * a client whose source the fuzzer feeds. */
struct host {
	struct mux m;
	int primary, out, err, client_w; /* the test's ends */
	uint32_t controls;               /* control frames taken */
	uint64_t payload_sum;            /* touches every payload byte */
};

/* As boxlite-vmm's: what a guest may send is taken, the rest refused. */
static int on_control(void *ctx, const struct mux_hdr *h, const uint8_t *p, bl_error *e)
{
	struct host *x = ctx;
	for (uint32_t i = 0; i < h->len; i++)
		x->payload_sum += p[i];
	switch (h->type) {
	case MUX_READY:
	case MUX_STATUS:
	case MUX_OUTCOME:
	case MUX_EXIT:
		x->controls++;
		return 0;
	default:
		return bl_error_set(e, EPROTO, "the guest sent control frame %u", h->type);
	}
}

static void host_open(struct host *x, int *peer)
{
	memset(x, 0, sizeof *x);
	int sp[2], pr[2], out[2], err[2], cl[2];
	bl_error e;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pr) == 0);
	CHECK(pipe2(out, O_CLOEXEC | O_NONBLOCK) == 0 && pipe2(err, O_CLOEXEC | O_NONBLOCK) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cl) == 0);
	CHECK(mux_init(&x->m, sp[0], on_control, x, &e) == 0);
	CHECK(mux_add(&x->m, MUX_CHAN_PRIMARY, pr[0], pr[0], &e) == 0);
	CHECK(mux_add(&x->m, MUX_CHAN_STDOUT, -1, out[1], &e) == 0);
	CHECK(mux_add(&x->m, MUX_CHAN_STDERR, -1, err[1], &e) == 0);
	CHECK(mux_add(&x->m, MUX_CHAN_FIRST_CLIENT, cl[0], -1, &e) == 0);
	nonblock(pr[1]);
	nonblock(sp[1]);
	x->primary = pr[1];
	x->out = out[0];
	x->err = err[0];
	nonblock(cl[1]);
	x->client_w = cl[1];
	*peer = sp[1];
}

static void host_close(struct host *x)
{
	mux_free(&x->m);
	close(x->primary);
	close(x->out);
	close(x->err);
	close(x->client_w);
}

/* Sometimes the host's local readers read, sometimes its client writes,
 * sometimes the peer reads the port: every mix of stalls. */
static void locals(struct host *x, int peer)
{
	static uint8_t buf[1 << 16];
	uint32_t r = rnd();
	if (r & 1)
		(void)!read(x->primary, buf, sizeof buf);
	if (r & 2)
		(void)!read(x->out, buf, sizeof buf);
	if (r & 4)
		(void)!read(x->err, buf, sizeof buf);
	if ((r & 0x18) == 0x18)
		(void)!send(x->client_w, buf, 1 + rnd() % sizeof buf, MSG_NOSIGNAL);
	if (r & 0x20)
		(void)!read(peer, buf, sizeof buf);
}

/* A frame a guest may send, with random but valid fields: most of a
 * stream is made of these, so that the mux gets deep into it. */
static void valid_frame(struct mux_hdr *h)
{
	static const uint32_t types[] = {MUX_DATA, MUX_DATA, MUX_DATA, MUX_CREDIT, MUX_CLOSE,
					 MUX_READY, MUX_STATUS, MUX_OUTCOME, MUX_EXIT};
	static const uint32_t chans[] = {1, 2, 3, 16, 17, 4};
	h->type = (uint16_t)pick(types, sizeof types / sizeof *types);
	h->chan = h->type >= MUX_READY ? 0 : pick(chans, sizeof chans / sizeof *chans);
	h->flags = 0;
	uint32_t data = rnd() % 4 ? rnd() % 512 : rnd() % MUX_DATA_CHUNK;
	h->len = h->type == MUX_CREDIT ? 4 : h->type == MUX_CLOSE ? 0 : data;
}

/* One frame or some garbage at s[*n], within STREAM_MAX; a stream is
 * clean (valid frames, a rare bad one) or dirty. */
static void add_piece(uint8_t *s, size_t *n, bool clean)
{
	static const uint32_t types[] = {MUX_OPEN, MUX_DATA,   MUX_CREDIT, MUX_CLOSE, MUX_SPEC,
					 MUX_MAIN, MUX_GO,     MUX_STOP,   MUX_READY, MUX_STATUS,
					 MUX_OUTCOME, MUX_EXIT, 0,          5,         0xffff};
	static const uint32_t chans[] = {0, 0, 1, 1, 2, 3, 16, 17, 4, 0xffffffffu};
	static const uint32_t lens[] = {0, 1, 4, 4, 12, 100, MUX_DATA_CHUNK, MUX_WINDOW,
					MUX_WINDOW + 1, MUX_MAX_PAYLOAD, MUX_MAX_PAYLOAD + 1,
					0xffffffffu};
	size_t room = STREAM_MAX - *n;
	if (room < MUX_HEADER_SIZE)
		return;
	if (rnd() % (clean ? 4000 : 8) == 0) { /* garbage */
		size_t g = 1 + rnd() % (room < 64 ? room : 64);
		for (size_t i = 0; i < g; i++)
			s[*n + i] = (uint8_t)rnd();
		*n += g;
		return;
	}
	uint32_t len = rnd() % 3 ? rnd() % 200 : pick(lens, sizeof lens / sizeof *lens);
	struct mux_hdr h = {
		.chan = rnd() % 16 ? pick(chans, sizeof chans / sizeof *chans) : rnd(),
		.type = (uint16_t)(rnd() % 16 ? pick(types, sizeof types / sizeof *types) : rnd()),
		.flags = (uint16_t)(rnd() % 32 ? 0 : rnd()),
		.len = len,
	};
	if (h.type == MUX_CREDIT && rnd() % 4)
		h.len = 4;
	if (clean && rnd() % 2000)
		valid_frame(&h);
	mux_hdr_put(s + *n, &h);
	*n += MUX_HEADER_SIZE;
	/* The payload as long as there is room: a long one is a cut stream. */
	size_t body = h.len < STREAM_MAX - *n ? h.len : STREAM_MAX - *n;
	if (h.type == MUX_CREDIT && body >= 4) {
		/* Clean: mostly none (always valid), the window being unknown here. */
		uint32_t v = clean ? (rnd() % 10 ? 0 : rnd() % 16)
				   : rnd() % 2 ? rnd() % 70000 : rnd();
		for (int i = 0; i < 4; i++)
			s[*n + (size_t)i] = (uint8_t)(v >> (8 * i));
		*n += 4;
		body -= 4;
	}
	for (size_t i = 0; i < body; i++)
		s[*n + i] = (uint8_t)rnd();
	*n += body;
}

/* Feed one stream: 0 if the mux took it all and still runs, 1 if it failed
 * (with a message) along the way. */
static int feed(const uint8_t *s, size_t n)
{
	struct host x;
	int peer;
	host_open(&x, &peer);
	bl_error e = {0};
	int rc = 0;
	for (size_t off = 0; off < n && rc == 0;) {
		size_t cut = 1 + rnd() % (rnd() % 4 ? 65536 : 64);
		ssize_t w = send(peer, s + off, cut < n - off ? cut : n - off, MSG_NOSIGNAL);
		CHECK(w > 0 || errno == EAGAIN);
		if (w > 0)
			off += (size_t)w;
		locals(&x, peer);
		if (mux_run(&x.m, &e) < 0)
			rc = 1;
		CHECK(x.m.out_len - x.m.out_off <= QUEUE_BOUND);
	}
	if (rc == 0 && rnd() % 2) { /* the guest goes away */
		close(peer);
		peer = -1;
		for (int i = 0; i < 1000 && rc == 0; i++)
			if (mux_run(&x.m, &e) < 0)
				rc = 1;
		CHECK(rc == 1); /* a closed port always ends it */
	}
	if (rc && getenv("FUZZ_MUX_VERBOSE"))
		fprintf(stderr, "%s\n", e.msg);
	if (rc) {
		CHECK(e.msg[0] && e.status != 0);
		CHECK(e.status == EPROTO || e.status == EPIPE || e.status == ECONNRESET);
	}
	host_close(&x);
	if (peer >= 0)
		close(peer);
	return rc;
}

int main(int argc, char **argv)
{
	state = argc > 1 ? strtoull(argv[1], NULL, 0) : 0x6d7578ull;
	int streams = argc > 2 ? atoi(argv[2]) : STREAMS;
	CHECK(state != 0 && streams > 0);
	uint8_t *s = malloc(STREAM_MAX);
	CHECK(s);
	int before = open_fds(), failed = 0;
	for (int i = 0; i < streams; i++) {
		size_t n = 0;
		bool clean = rnd() % 2;
		for (uint32_t frames = 1 + rnd() % (clean ? 400 : 40); frames--;)
			add_piece(s, &n, clean);
		failed += feed(s, n);
	}
	CHECK(open_fds() == before);
	free(s);
	fprintf(stderr, "ok  fuzz_mux: %d streams, %d ended the mux, %d taken whole\n", streams,
		failed, streams - failed);
	return 0;
}

/*
 * Tests of the channel multiplexer (native/common/mux.c): two muxes joined
 * by a socketpair "port", or one mux and a raw peer that writes frames by
 * hand, each driven by the test's own single-threaded loop.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <time.h>

#include "mux_peer.h"

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/* The byte at offset i of every test stream: not periodic in 256, so a
 * dropped, doubled or reordered chunk shows. */
static uint8_t pattern(size_t i) { return (uint8_t)(((uint32_t)i * 2654435761u) >> 24); }

static int unread(int fd) /* bytes queued for reading at fd */
{
	int n = 0;
	CHECK(ioctl(fd, FIONREAD, &n) == 0);
	return n;
}

/* ---- what reaches the control callback ---- */

#define LOG_MAX 16
struct ctl_log {
	int n;
	struct mux_hdr h[LOG_MAX];
	uint8_t *payload[LOG_MAX];
	uint16_t refuse; /* a type the callback rejects, as a side would */
};

static int on_control(void *ctx, const struct mux_hdr *h, const uint8_t *p, bl_error *e)
{
	struct ctl_log *l = ctx;
	if (h->type == l->refuse)
		return bl_error_set(e, EPROTO, "refused control frame %u", h->type);
	CHECK(l->n < LOG_MAX);
	l->h[l->n] = *h;
	l->payload[l->n] = malloc(h->len + 1u);
	CHECK(l->payload[l->n]);
	memcpy(l->payload[l->n], p, h->len);
	l->n++;
	return 0;
}

static void log_free(struct ctl_log *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->payload[i]);
	l->n = 0;
}

/* ---- two muxes over one port ---- */

struct pair {
	struct mux a, b; /* a: the host's side, b: the guest's */
	struct ctl_log la, lb;
};

static void pair_open(struct pair *p)
{
	memset(p, 0, sizeof *p);
	int sp[2];
	bl_error e;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK(mux_init(&p->a, sp[0], on_control, &p->la, &e) == 0);
	CHECK(mux_init(&p->b, sp[1], on_control, &p->lb, &e) == 0);
}

static void pair_close(struct pair *p)
{
	mux_free(&p->a);
	mux_free(&p->b);
	log_free(&p->la);
	log_free(&p->lb);
}

/* A socket channel: the muxes' ends (ma, mb, theirs to close) and the
 * test's "clients" at the other ends (ca, cb). */
struct sock_chan {
	int ma, mb, ca, cb;
};

static struct sock_chan pair_socket_chan(struct pair *p, uint32_t id)
{
	int sa[2], sb[2];
	bl_error e;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sa) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sb) == 0);
	CHECK(mux_add(&p->a, id, sa[0], sa[0], &e) == 0);
	CHECK(mux_add(&p->b, id, sb[0], sb[0], &e) == 0);
	nonblock(sa[1]);
	nonblock(sb[1]);
	return (struct sock_chan){sa[0], sb[0], sa[1], sb[1]};
}

/* A one-way channel: the test writes *w, a reads it, b writes the pipe
 * the test reads at *r. */
static void pair_pipe_chan(struct pair *p, uint32_t id, int *w, int *r)
{
	int in[2], out[2];
	bl_error e;
	CHECK(pipe2(in, O_CLOEXEC | O_NONBLOCK) == 0 && pipe2(out, O_CLOEXEC | O_NONBLOCK) == 0);
	CHECK(mux_add(&p->a, id, in[0], -1, &e) == 0);
	CHECK(mux_add(&p->b, id, -1, out[1], &e) == 0);
	*w = in[1];
	*r = out[0];
}

/* One round: wait up to ms for the muxes or the test's fds, then run both
 * muxes (mux_run never blocks). */
static void pump(struct pair *p, struct pollfd *fds, int nfds, int ms)
{
	struct pollfd all[16] = {{.fd = p->a.epfd, .events = POLLIN},
				 {.fd = p->b.epfd, .events = POLLIN}};
	CHECK(nfds <= 14);
	if (nfds)
		memcpy(all + 2, fds, (size_t)nfds * sizeof *fds);
	CHECK(poll(all, (nfds_t)nfds + 2, ms) >= 0);
	if (nfds)
		memcpy(fds, all + 2, (size_t)nfds * sizeof *fds);
	bl_error e;
	if (mux_run(&p->a, &e) < 0 || mux_run(&p->b, &e) < 0) {
		fprintf(stderr, "mux_run: %s\n", e.msg);
		CHECK(0);
	}
}

/* A test stream: size bytes of pattern written at wfd, read back at rfd. */
struct flow {
	int wfd, rfd;
	size_t size, sent, got;
	bool close_after; /* close wfd once all is written; rfd must then see EOF */
	bool eof;
	bool stalled; /* its reader does not read */
};

static void flow_io(struct flow *f)
{
	uint8_t buf[64 * 1024];
	if (f->wfd >= 0 && f->sent < f->size) {
		size_t n = f->size - f->sent < sizeof buf ? f->size - f->sent : sizeof buf;
		for (size_t i = 0; i < n; i++)
			buf[i] = pattern(f->sent + i);
		ssize_t w = write(f->wfd, buf, n);
		CHECK(w > 0 || errno == EAGAIN);
		if (w > 0)
			f->sent += (size_t)w;
	}
	if (f->wfd >= 0 && f->sent == f->size && f->close_after) {
		close(f->wfd);
		f->wfd = -1;
	}
	if (f->stalled || f->eof)
		return;
	ssize_t r = read(f->rfd, buf, sizeof buf);
	CHECK(r >= 0 || errno == EAGAIN);
	if (r == 0)
		f->eof = true;
	for (ssize_t i = 0; i < r; i++)
		CHECK(buf[i] == pattern(f->got + (size_t)i));
	if (r > 0)
		f->got += (size_t)r;
	CHECK(f->got <= f->size);
}

static bool flow_done(const struct flow *f)
{
	return f->stalled || (f->got == f->size && (!f->close_after || f->eof));
}

/* Move the flows until each is done (stalled ones never read); fails
 * after timeout_ms.  The time it took. */
static long run_flows(struct pair *p, struct flow *fl, int n, long timeout_ms)
{
	long start = now_ms();
	for (;;) {
		bool done = true;
		struct pollfd fds[12];
		int nfds = 0;
		for (int i = 0; i < n; i++) {
			done &= flow_done(&fl[i]);
			if (fl[i].wfd >= 0 && fl[i].sent < fl[i].size)
				fds[nfds++] = (struct pollfd){.fd = fl[i].wfd, .events = POLLOUT};
			if (!fl[i].stalled && !fl[i].eof)
				fds[nfds++] = (struct pollfd){.fd = fl[i].rfd, .events = POLLIN};
		}
		if (done)
			return now_ms() - start;
		CHECK(now_ms() - start < timeout_ms);
		pump(p, fds, nfds, 50);
		for (int i = 0; i < n; i++)
			flow_io(&fl[i]);
	}
}

/* ---- streams ---- */

static const size_t sizes[] = {0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 5u << 20};

/* Both ways at once on a socket channel, one way on a pipe channel whose
 * writer closes: every byte arrives in order, then EOF. */
static void test_streams_byte_exact(void)
{
	for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
		struct pair p;
		pair_open(&p);
		int w, r;
		struct sock_chan c = pair_socket_chan(&p, MUX_CHAN_PRIMARY);
		pair_pipe_chan(&p, MUX_CHAN_STDOUT, &w, &r);
		struct flow fl[3] = {
			{.wfd = c.ca, .rfd = c.cb, .size = sizes[s]},
			{.wfd = c.cb, .rfd = c.ca, .size = sizes[s]},
			{.wfd = w, .rfd = r, .size = sizes[s], .close_after = true},
		};
		run_flows(&p, fl, 3, 20000);
		CHECK(fl[0].got == sizes[s] && fl[1].got == sizes[s] && fl[2].eof);
		/* The pipe channel ended on both sides; the socket one did not. */
		for (int i = 0; i < 20 && mux_has(&p.b, MUX_CHAN_STDOUT); i++)
			pump(&p, NULL, 0, 10);
		CHECK(!mux_has(&p.a, MUX_CHAN_STDOUT) && !mux_has(&p.b, MUX_CHAN_STDOUT));
		CHECK(mux_has(&p.a, MUX_CHAN_PRIMARY) && mux_has(&p.b, MUX_CHAN_PRIMARY));
		close(c.ca);
		close(c.cb);
		close(r);
		pair_close(&p);
	}
}

/* ---- credit and stall isolation ---- */

/* Run the pair until nothing moves for a while: the stalled writer's
 * writes would block and neither mux has work. */
static void settle(struct pair *p, struct flow *f)
{
	for (int quiet = 0, rounds = 0; quiet < 5; rounds++) {
		CHECK(rounds < 2000); /* a mux whose set stays ready is a busy loop */
		size_t before = f->sent;
		pump(p, NULL, 0, 20);
		flow_io(f);
		bool busy = f->sent != before || ready_within(p->a.epfd, 0) ||
			    ready_within(p->b.epfd, 0);
		quiet = busy ? 0 : quiet + 1;
	}
}

/* How long 16 MiB takes on a pipe channel of a pair of its own. */
static long alone_ms(void)
{
	struct pair p;
	pair_open(&p);
	int w, r;
	pair_pipe_chan(&p, MUX_CHAN_STDOUT, &w, &r);
	struct flow f = {.wfd = w, .rfd = r, .size = 16u << 20};
	long took = run_flows(&p, &f, 1, 20000);
	close(w);
	close(r);
	pair_close(&p);
	return took;
}

static void test_credit_stall_isolation(void)
{
	long alone = alone_ms();
	struct pair p;
	pair_open(&p);
	int w, r;
	struct sock_chan c = pair_socket_chan(&p, MUX_CHAN_FIRST_CLIENT);
	pair_pipe_chan(&p, MUX_CHAN_STDOUT, &w, &r);
	/* The client at a writes without end; its reader at b never reads. */
	struct flow fl[2] = {
		{.wfd = c.ca, .rfd = c.cb, .size = 64u << 20, .stalled = true},
		{.wfd = w, .rfd = r, .size = 16u << 20},
	};
	long took = run_flows(&p, fl, 2, 20000);
	fprintf(stderr, "    16 MiB beside a stalled channel: %ld ms, alone: %ld ms\n", took,
		alone);
	CHECK(took <= 3 * alone + 250); /* slack for a loaded machine, not for a stall */
	settle(&p, &fl[0]);

	/* The writer is blocked: a's mux stopped reading its source. */
	CHECK(write(c.ca, "x", 1) < 0 && errno == EAGAIN);
	CHECK(unread(c.ma) > 0);
	/* What b's mux holds of the channel: what the writer got rid of, less
	 * what is still in a's source socket, in b's socket to its reader, and
	 * on the port. */
	long held = (long)fl[0].sent - unread(c.ma) - unread(c.cb) - unread(p.a.port) -
		    unread(p.b.port);
	fprintf(stderr, "    held by the receiving mux: %ld of a window of %u\n", held, MUX_WINDOW);
	CHECK(held <= (long)MUX_WINDOW);
	CHECK(held >= (long)MUX_WINDOW / 2); /* the window is used, not just bounded */

	/* The writer ends while it is held back: its end is no busy loop. */
	close(c.ca);
	fl[0].wfd = -1;
	settle(&p, &fl[0]);
	CHECK(!ready_within(p.a.epfd, 0) && !ready_within(p.b.epfd, 0));

	/* The reader resumes: everything, in order, then EOF. */
	fl[0].size = fl[0].sent;
	fl[0].stalled = false;
	fl[0].close_after = true;
	run_flows(&p, fl, 1, 20000);
	CHECK(fl[0].eof && fl[0].got == fl[0].sent);
	close(c.cb);
	close(r);
	pair_close(&p);
}

/* ---- control frames ---- */

static void test_control_frames(void)
{
	struct pair p;
	pair_open(&p);
	static const char spec[] = "boxlite-shim\0--flag\0";
	uint8_t *big = malloc(MUX_MAX_PAYLOAD);
	CHECK(big);
	for (size_t i = 0; i < MUX_MAX_PAYLOAD; i++)
		big[i] = pattern(i);
	CHECK(mux_send(&p.a, MUX_SPEC, MUX_CHAN_CONTROL, spec, sizeof spec) == 0);
	CHECK(mux_send(&p.a, MUX_MAIN, MUX_CHAN_CONTROL, big, MUX_MAX_PAYLOAD) == 0);
	CHECK(mux_send(&p.a, MUX_GO, MUX_CHAN_CONTROL, NULL, 0) == 0);
	CHECK(mux_send(&p.a, MUX_OPEN, 20, NULL, 0) == 0);
	CHECK(mux_send(&p.a, MUX_MAIN, MUX_CHAN_CONTROL, big, MUX_MAX_PAYLOAD + 1) < 0);
	CHECK(mux_send(&p.b, MUX_READY, MUX_CHAN_CONTROL, NULL, 0) == 0);
	CHECK(mux_send(&p.b, MUX_EXIT, MUX_CHAN_CONTROL, "\7\0\0\0", 4) == 0);
	for (int i = 0; i < 500 && (p.lb.n < 4 || p.la.n < 2); i++)
		pump(&p, NULL, 0, 10);
	CHECK(p.lb.n == 4 && p.la.n == 2);
	CHECK(p.lb.h[0].type == MUX_SPEC && p.lb.h[0].len == sizeof spec);
	CHECK(memcmp(p.lb.payload[0], spec, sizeof spec) == 0);
	CHECK(p.lb.h[1].type == MUX_MAIN && p.lb.h[1].len == MUX_MAX_PAYLOAD);
	CHECK(memcmp(p.lb.payload[1], big, MUX_MAX_PAYLOAD) == 0);
	CHECK(p.lb.h[2].type == MUX_GO && p.lb.h[2].len == 0);
	CHECK(p.lb.h[3].type == MUX_OPEN && p.lb.h[3].chan == 20 && p.lb.h[3].len == 0);
	CHECK(p.la.h[0].type == MUX_READY && p.la.h[1].type == MUX_EXIT && p.la.h[1].len == 4);
	CHECK(p.la.payload[1][0] == 7);
	free(big);
	pair_close(&p);
}

/* ---- one mux and a raw peer ---- */

struct raw {
	struct mux m;
	struct ctl_log log;
	int peer; /* the port's other end: the test writes frames there */
};

static void raw_open(struct raw *r)
{
	memset(r, 0, sizeof *r);
	int sp[2];
	bl_error e;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == 0);
	CHECK(mux_init(&r->m, sp[0], on_control, &r->log, &e) == 0);
	nonblock(sp[1]);
	r->peer = sp[1];
}

static void raw_close(struct raw *r)
{
	mux_free(&r->m);
	log_free(&r->log);
	if (r->peer >= 0)
		close(r->peer);
}

/* Write n bytes at the port while the mux runs: 0 once it took them all,
 * or -1 with e when mux_run failed. */
static int raw_feed(struct raw *r, const void *buf, size_t n, bl_error *e)
{
	const uint8_t *b = buf;
	for (size_t off = 0; off < n;) {
		ssize_t w = write(r->peer, b + off, n - off);
		CHECK(w > 0 || errno == EAGAIN);
		if (w > 0)
			off += (size_t)w;
		if (ready_within(r->m.epfd, w > 0 ? 0 : 100) && mux_run(&r->m, e) < 0)
			return -1;
	}
	return run_idle(&r->m, 1000, e);
}

static int raw_frame(struct raw *r, uint32_t chan, uint16_t type, const void *p, uint32_t len,
		     bl_error *e)
{
	uint8_t *f = malloc(MUX_HEADER_SIZE + len);
	CHECK(f);
	int rc = raw_feed(r, f, put_frame(f, chan, type, 0, p, len), e);
	free(f);
	return rc;
}

/* A channel to a socketpair: the test's end. */
static int raw_socket_chan(struct raw *r, uint32_t id)
{
	int s[2];
	bl_error e;
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s) == 0);
	CHECK(mux_add(&r->m, id, s[0], s[0], &e) == 0);
	nonblock(s[1]);
	return s[1];
}

/* The frames at the peer's end; the first of type at *h. */
static bool peer_got(struct raw *r, uint16_t type, uint32_t chan)
{
	static uint8_t buf[1 << 16];
	ssize_t n = read(r->peer, buf, sizeof buf);
	for (ssize_t off = 0; off + (ssize_t)MUX_HEADER_SIZE <= n;) {
		struct mux_hdr h;
		mux_hdr_get(buf + off, &h);
		if (h.type == type && h.chan == chan)
			return true;
		off += (ssize_t)(MUX_HEADER_SIZE + h.len);
	}
	return false;
}

static void test_unknown_and_closed_channels(void)
{
	struct raw r;
	raw_open(&r);
	bl_error e;
	int c = raw_socket_chan(&r, 5);
	CHECK(raw_frame(&r, 99, MUX_DATA, "lost", 4, &e) == 0);
	CHECK(raw_frame(&r, 99, MUX_CREDIT, "\1\0\0\0", 4, &e) == 0);
	CHECK(raw_frame(&r, 99, MUX_CLOSE, NULL, 0, &e) == 0);
	CHECK(raw_frame(&r, 5, MUX_DATA, "abc", 3, &e) == 0);
	CHECK(raw_frame(&r, 5, MUX_CLOSE, NULL, 0, &e) == 0);
	CHECK(!mux_has(&r.m, 5));
	char buf[8];
	CHECK(read(c, buf, sizeof buf) == 3 && memcmp(buf, "abc", 3) == 0);
	CHECK(read(c, buf, sizeof buf) == 0); /* then EOF */
	close(c);
	/* In flight when it closed: dropped. */
	CHECK(raw_frame(&r, 5, MUX_DATA, "late", 4, &e) == 0);
	CHECK(raw_frame(&r, 5, MUX_CREDIT, "\1\0\0\0", 4, &e) == 0);
	/* The id again: a new channel, fresh credit. */
	c = raw_socket_chan(&r, 5);
	CHECK(raw_frame(&r, 5, MUX_DATA, "new", 3, &e) == 0);
	CHECK(ready_within(c, 1000) && read(c, buf, sizeof buf) == 3 && memcmp(buf, "new", 3) == 0);
	close(c);
	raw_close(&r);
}

/* A pipe's write end that holds no more (its reader never reads). */
static int full_pipe(int *reader)
{
	int p[2];
	CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
	char buf[4096] = {0};
	while (write(p[1], buf, sizeof buf) > 0)
		;
	CHECK(errno == EAGAIN);
	*reader = p[0];
	return p[1];
}

static void expect_eproto(int rc, const bl_error *e)
{
	CHECK(rc < 0);
	CHECK(e->status == EPROTO && e->msg[0]);
}

static void test_data_beyond_credit(void)
{
	struct raw r;
	raw_open(&r);
	bl_error e;
	int reader, w = full_pipe(&reader);
	CHECK(mux_add(&r.m, 7, -1, w, &e) == 0);
	uint8_t *chunk = calloc(1, MUX_DATA_CHUNK);
	CHECK(chunk);
	for (uint32_t sent = 0; sent < MUX_WINDOW; sent += MUX_DATA_CHUNK)
		CHECK(raw_frame(&r, 7, MUX_DATA, chunk, MUX_DATA_CHUNK, &e) == 0);
	expect_eproto(raw_frame(&r, 7, MUX_DATA, "!", 1, &e), &e);
	free(chunk);
	close(reader);
	raw_close(&r);
}

struct violation {
	const char *what;
	uint32_t chan;
	uint16_t type, flags;
	uint32_t len;         /* in the header */
	const char *payload;  /* its first bytes, or NULL: zeros */
};

static void test_violations(void)
{
	static const struct violation cases[] = {
		{"unknown type", 0, 99, 0, 0, NULL},
		{"unknown type on a channel", 5, 5, 0, 0, NULL},
		{"flags", 5, MUX_DATA, 1, 1, NULL},
		{"flags on control", 0, MUX_READY, 0x8000, 0, NULL},
		{"payload too large", 0, MUX_STATUS, 0, MUX_MAX_PAYLOAD + 1, NULL},
		{"length near 4 GiB", 0, MUX_STATUS, 0, 0xffffffffu, NULL},
		{"data frame above the window", 5, MUX_DATA, 0, MUX_WINDOW + 1, NULL},
		{"credit beyond the window", 5, MUX_CREDIT, 0, 4, "\1\0\0\0"},
		{"credit wrapping", 5, MUX_CREDIT, 0, 4, "\xff\xff\xff\xff"},
		{"credit of 3 bytes", 5, MUX_CREDIT, 0, 3, NULL},
		{"data on the control channel", 0, MUX_DATA, 0, 1, "xxxx"},
		{"credit on the control channel", 0, MUX_CREDIT, 0, 4, "\1\0\0\0"},
		{"control frame on a channel", 5, MUX_STATUS, 0, 0, NULL},
		{"exit on a channel", 1, MUX_EXIT, 0, 4, NULL},
		{"open of channel 0", 0, MUX_OPEN, 0, 0, NULL},
		{"close of channel 0", 0, MUX_CLOSE, 0, 0, NULL},
		{"close with a payload", 5, MUX_CLOSE, 0, 1, NULL},
		{"refused by the callback", 0, MUX_STOP, 0, 0, NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const struct violation *v = &cases[i];
		struct raw r;
		raw_open(&r);
		r.log.refuse = MUX_STOP;
		int c = raw_socket_chan(&r, 5);
		uint8_t f[64] = {0};
		mux_hdr_put(f, &(struct mux_hdr){v->chan, v->type, v->flags, v->len});
		if (v->payload)
			memcpy(f + MUX_HEADER_SIZE, v->payload, 4);
		size_t n = MUX_HEADER_SIZE + (v->len < 8 ? v->len : 8);
		bl_error e = {0};
		int rc = raw_feed(&r, f, n, &e);
		if (rc == 0 || e.status != EPROTO)
			fprintf(stderr, "%s: rc %d, %s\n", v->what, rc, rc ? e.msg : "accepted");
		expect_eproto(rc, &e);
		close(c);
		raw_close(&r);
	}
}

/* Ends a channel through two of its fds in one batch of events. */
static void test_two_events_one_channel(void)
{
	struct raw r;
	raw_open(&r);
	bl_error e;
	int in[2], out[2];
	CHECK(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0);
	CHECK(mux_add(&r.m, 9, in[0], out[1], &e) == 0);
	close(in[1]);  /* its source ends */
	close(out[0]); /* and its reader goes */
	CHECK(run_idle(&r.m, 10, &e) == 0);
	CHECK(!mux_has(&r.m, 9));
	CHECK(peer_got(&r, MUX_CLOSE, 9));
	raw_close(&r);
}

/* A channel's fd whose file lives on elsewhere (a copy in a child): the
 * closed channel's registration must not outlive it. */
static void test_closed_fd_copy_elsewhere(void)
{
	struct raw r;
	raw_open(&r);
	bl_error e;
	int in[2];
	CHECK(pipe2(in, O_CLOEXEC) == 0);
	int copy = dup(in[0]);
	CHECK(copy >= 0 && mux_add(&r.m, 9, in[0], -1, &e) == 0);
	close(in[1]);
	CHECK(run_idle(&r.m, 10, &e) == 0);
	CHECK(!mux_has(&r.m, 9));
	CHECK(!ready_within(r.m.epfd, 0));
	close(copy);
	raw_close(&r);
}

/* A channel's source ends while what came for it cannot be delivered yet:
 * no busy loop meanwhile, then the bytes, then its end. */
static void test_source_ends_while_held(void)
{
	struct raw r;
	raw_open(&r);
	bl_error e;
	int in[2], reader, w = full_pipe(&reader);
	CHECK(pipe2(in, O_CLOEXEC) == 0);
	CHECK(mux_add(&r.m, 9, in[0], w, &e) == 0);
	CHECK(raw_frame(&r, 9, MUX_DATA, "abc", 3, &e) == 0);
	close(in[1]);
	CHECK(run_idle(&r.m, 10, &e) == 0);
	CHECK(mux_has(&r.m, 9) && !ready_within(r.m.epfd, 0));
	static char buf[1 << 17];
	size_t got = 0;
	for (ssize_t n; (n = read(reader, buf + got, sizeof buf - got)) > 0;)
		got += (size_t)n;
	for (int i = 0; i < 10 && mux_has(&r.m, 9); i++)
		CHECK(ready_within(r.m.epfd, 100) && mux_run(&r.m, &e) == 0);
	CHECK(!mux_has(&r.m, 9));
	CHECK(read(reader, buf, sizeof buf) == 3 && memcmp(buf, "abc", 3) == 0);
	CHECK(read(reader, buf, sizeof buf) == 0);
	CHECK(peer_got(&r, MUX_CLOSE, 9));
	close(reader);
	raw_close(&r);
}

/* A peer that sends tiny frames and never reads the port: the credit the
 * mux owes it must not pile up without bound. */
static void test_credit_flood_bounded(void)
{
	struct raw r;
	raw_open(&r);
	bl_error e;
	int out[2]; /* drained after each round: every frame is delivered at once */
	CHECK(pipe2(out, O_CLOEXEC | O_NONBLOCK) == 0);
	CHECK(mux_add(&r.m, MUX_CHAN_STDOUT, -1, out[1], &e) == 0);
	enum { FRAMES = 4096, ROUNDS = 40 };
	uint8_t *buf = malloc(FRAMES * (MUX_HEADER_SIZE + 1));
	CHECK(buf);
	size_t n = 0;
	for (int i = 0; i < FRAMES; i++)
		n += put_frame(buf + n, MUX_CHAN_STDOUT, MUX_DATA, 0, "x", 1);
	size_t most = 0;
	for (int i = 0; i < ROUNDS; i++) {
		CHECK(raw_feed(&r, buf, n, &e) == 0);
		char sink[FRAMES];
		CHECK(read(out[0], sink, sizeof sink) == FRAMES);
		size_t queued = r.m.out_len - r.m.out_off;
		most = queued > most ? queued : most;
	}
	fprintf(stderr, "    most queued for a peer that does not read: %zu\n", most);
	CHECK(most <= MUX_OUT_HIGH + MUX_DATA_CHUNK);
	free(buf);
	close(out[0]);
	raw_close(&r);
}

/* The peer closes the port with output queued for it. */
static void test_port_closed(void)
{
	int before = open_fds();
	struct raw r;
	raw_open(&r);
	bl_error e;
	int c = raw_socket_chan(&r, 5);
	uint8_t *big = calloc(1, MUX_MAX_PAYLOAD);
	CHECK(big);
	for (int i = 0; i < 4; i++)
		CHECK(mux_send(&r.m, MUX_STATUS, MUX_CHAN_CONTROL, big, MUX_MAX_PAYLOAD) == 0);
	free(big);
	CHECK(raw_frame(&r, 5, MUX_DATA, "abc", 3, &e) == 0);
	close(r.peer);
	r.peer = -1;
	int rc = 0;
	for (int i = 0; i < 100 && rc == 0; i++)
		rc = ready_within(r.m.epfd, 100) ? mux_run(&r.m, &e) : 0;
	CHECK(rc < 0 && (e.status == EPIPE || e.status == ECONNRESET) && e.msg[0]);
	raw_close(&r);
	close(c);
	CHECK(open_fds() == before);
}

/* Each test, by name: `test_mux NAME...` runs only those. */
#define T(name) {#name, name}
static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	T(test_streams_byte_exact),
	T(test_credit_stall_isolation),
	T(test_control_frames),
	T(test_unknown_and_closed_channels),
	T(test_data_beyond_credit),
	T(test_violations),
	T(test_two_events_one_channel),
	T(test_closed_fd_copy_elsewhere),
	T(test_source_ends_while_held),
	T(test_credit_flood_bounded),
	T(test_port_closed),
};

static bool chosen(const char *name, int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return true;
	return argc < 2;
}

int main(int argc, char **argv)
{
	/* The muxes' owners keep SIGPIPE's default; so do these tests. */
	CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
	for (size_t i = 0; i < sizeof tests / sizeof *tests; i++)
		if (chosen(tests[i].name, argc, argv)) {
			tests[i].fn();
			fprintf(stderr, "ok  %s\n", tests[i].name);
		}
	return 0;
}

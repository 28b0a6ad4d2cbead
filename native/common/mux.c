/*
 * mux.c - channels over one port (mux.h).
 *
 * One level-triggered epoll set of the mux's own holds the port and every
 * channel's fds; its owner's loop watches that set's fd and calls mux_run.
 * Each registered fd points at a struct mux_src saying whose it is.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/mux.h"

#define MAX_EVENTS 32

enum src_role { SRC_PORT, SRC_READ, SRC_WRITE, SRC_BOTH };

struct mux_src {
	enum src_role role;
	struct mux_chan *ch;
};

struct mux_chan {
	struct mux_chan *next;
	uint32_t id;
	int rfd, wfd;      /* local: what we read goes to the peer, what comes is written */
	struct mux_src rsrc, wsrc;
	uint32_t rev, wev; /* events registered for rfd, wfd */
	uint8_t *pend;     /* received, not yet written to wfd: at most MUX_WINDOW */
	size_t pend_off, pend_len;
	uint32_t credit; /* bytes we may still send */
	uint32_t owed;   /* bytes delivered to wfd, not yet credited back */
	bool closing;    /* the peer closed: close once pend is delivered */
	bool rdone;      /* rfd ended while pend waited: end once it is delivered */
	bool dead;       /* freed at the end of this mux_run (events may name it) */
};

static struct mux_src port_src = {SRC_PORT, NULL};

/* write(2), but a socket whose reader is gone is EPIPE, not SIGPIPE: the
 * mux's owners (boxlite-vmm, the guest init) keep SIGPIPE's default, and a
 * client that hangs up must not kill the box's supervisor. */
static ssize_t write_nosig(int fd, const void *p, size_t n)
{
	ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
	return w < 0 && errno == ENOTSOCK ? write(fd, p, n) : w;
}

/* ---- the header ---- */

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void mux_hdr_put(uint8_t out[MUX_HEADER_SIZE], const struct mux_hdr *h)
{
	put32(out, h->chan);
	out[4] = (uint8_t)h->type;
	out[5] = (uint8_t)(h->type >> 8);
	out[6] = (uint8_t)h->flags;
	out[7] = (uint8_t)(h->flags >> 8);
	put32(out + 8, h->len);
}

void mux_hdr_get(const uint8_t in[MUX_HEADER_SIZE], struct mux_hdr *h)
{
	h->chan = get32(in);
	h->type = (uint16_t)(in[4] | in[5] << 8);
	h->flags = (uint16_t)(in[6] | in[7] << 8);
	h->len = get32(in + 8);
}

int mux_hdr_check(const struct mux_hdr *h, bl_error *e)
{
	if (h->flags)
		return bl_error_set(e, EPROTO, "mux frame with flags %u", h->flags);
	if (h->len > MUX_MAX_PAYLOAD)
		return bl_error_set(e, EPROTO, "mux frame of %u bytes", h->len);
	switch (h->type) {
	case MUX_DATA:
	case MUX_CREDIT:
		/* A stream's frames; the control channel has no stream. */
		if (h->chan == MUX_CHAN_CONTROL)
			return bl_error_set(e, EPROTO, "mux %s frame on the control channel",
					    h->type == MUX_DATA ? "data" : "credit");
		if (h->type == MUX_CREDIT)
			return h->len == 4 ? 0
					   : bl_error_set(e, EPROTO, "mux credit of %u bytes", h->len);
		if (h->len > MUX_WINDOW)
			return bl_error_set(e, EPROTO, "mux data frame of %u bytes", h->len);
		return 0;
	case MUX_OPEN:
	case MUX_CLOSE:
		if (h->chan == MUX_CHAN_CONTROL || h->len)
			return bl_error_set(e, EPROTO, "mux open/close of channel %u", h->chan);
		return 0;
	case MUX_SPEC:
	case MUX_MAIN:
	case MUX_GO:
	case MUX_STOP:
	case MUX_READY:
	case MUX_STATUS:
	case MUX_OUTCOME:
	case MUX_EXIT:
		return h->chan == MUX_CHAN_CONTROL
			   ? 0
			   : bl_error_set(e, EPROTO, "mux control frame on channel %u", h->chan);
	default:
		return bl_error_set(e, EPROTO, "mux frame of unknown type %u", h->type);
	}
}

/* ---- the port's output ---- */

static int reserve(struct mux *m, size_t more)
{
	if (m->out_off && m->out_off == m->out_len)
		m->out_off = m->out_len = 0;
	if (m->out_len + more <= m->out_cap)
		return 0;
	if (m->out_off) { /* slide what is left to the front first */
		memmove(m->out, m->out + m->out_off, m->out_len - m->out_off);
		m->out_len -= m->out_off;
		m->out_off = 0;
		if (m->out_len + more <= m->out_cap)
			return 0;
	}
	size_t cap = m->out_cap ? m->out_cap : 64 * 1024;
	while (cap < m->out_len + more)
		cap *= 2;
	uint8_t *p = realloc(m->out, cap);
	if (!p)
		return -1;
	m->out = p;
	m->out_cap = cap;
	return 0;
}

/* A write-only fd stays registered with no events: its EPOLLERR says its
 * reader is gone.  A read side is removed instead while it is not read:
 * an EOF or hang-up (reported whatever the mask) would otherwise keep the
 * set ready while the channel waits for credit, a busy loop. */
static void watch(struct mux *m, int fd, uint32_t *now, uint32_t want, struct mux_src *src,
		  bool keep)
{
	if (fd < 0 || *now == want)
		return;
	struct epoll_event ev = {.events = want, .data.ptr = src};
	int op = keep || (want && *now) ? EPOLL_CTL_MOD : want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL;
	(void)epoll_ctl(m->epfd, op, fd, &ev);
	*now = want;
}

static void watch_port(struct mux *m)
{
	bool want = m->out_len > m->out_off;
	if (want == m->out_watched)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.ptr = &port_src};
	(void)epoll_ctl(m->epfd, EPOLL_CTL_MOD, m->port, &ev);
	m->out_watched = want;
}

int mux_send(struct mux *m, uint16_t type, uint32_t chan, const void *payload, size_t len)
{
	if (len > MUX_MAX_PAYLOAD || reserve(m, MUX_HEADER_SIZE + len) < 0)
		return -1;
	struct mux_hdr h = {.chan = chan, .type = type, .len = (uint32_t)len};
	mux_hdr_put(m->out + m->out_len, &h);
	if (len)
		memcpy(m->out + m->out_len + MUX_HEADER_SIZE, payload, len);
	m->out_len += MUX_HEADER_SIZE + len;
	watch_port(m);
	return 0;
}

/* 0, or -1: the port is broken. */
static int port_write(struct mux *m)
{
	while (m->out_off < m->out_len) {
		ssize_t n = write_nosig(m->port, m->out + m->out_off, m->out_len - m->out_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0)
			return -1;
		m->out_off += (size_t)n;
	}
	watch_port(m);
	return 0;
}

bool mux_flushed(const struct mux *m) { return m->out_off == m->out_len; }

void mux_flush(struct mux *m, int timeout_ms)
{
	while (!mux_flushed(m)) {
		struct pollfd p = {.fd = m->port, .events = POLLOUT};
		int n = poll(&p, 1, timeout_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || port_write(m) < 0 || (p.revents & (POLLERR | POLLHUP)))
			return;
	}
}

/* ---- channels ---- */

static struct mux_chan *find(const struct mux *m, uint32_t id)
{
	for (struct mux_chan *c = m->chans; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

bool mux_has(const struct mux *m, uint32_t id) { return find(m, id) != NULL; }

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -1 : 0;
}

/* Out of the set before close: an fd whose file is open elsewhere too (a
 * child's copy) would stay registered, pointing at freed memory. */
static void drop_fd(struct mux *m, int fd)
{
	(void)epoll_ctl(m->epfd, EPOLL_CTL_DEL, fd, NULL);
	close(fd);
}

/* Unlinked and closed now, freed by mux_run's end (or mux_free): events
 * of the batch in hand may still point into it. */
static void chan_free(struct mux *m, struct mux_chan *c)
{
	for (struct mux_chan **p = &m->chans; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	if (c->rfd >= 0)
		drop_fd(m, c->rfd);
	if (c->wfd >= 0 && c->wfd != c->rfd)
		drop_fd(m, c->wfd);
	c->rfd = c->wfd = -1;
	free(c->pend);
	c->pend = NULL;
	c->dead = true;
	c->next = m->dead;
	m->dead = c;
}

static void free_dead(struct mux *m)
{
	while (m->dead) {
		struct mux_chan *c = m->dead;
		m->dead = c->next;
		free(c);
	}
}

/* The local side is done (EOF, an error): tell the peer, forget it. */
static void chan_end(struct mux *m, struct mux_chan *c)
{
	(void)mux_send(m, MUX_CLOSE, c->id, NULL, 0);
	chan_free(m, c);
}

int mux_add(struct mux *m, uint32_t id, int rfd, int wfd, bl_error *e)
{
	struct mux_chan *c = calloc(1, sizeof *c);
	if (!c || find(m, id)) {
		free(c);
		if (rfd >= 0)
			close(rfd);
		if (wfd >= 0 && wfd != rfd)
			close(wfd);
		return bl_error_set(e, c ? EEXIST : ENOMEM, "mux channel %u", id);
	}
	*c = (struct mux_chan){.id = id, .rfd = rfd, .wfd = wfd, .credit = MUX_WINDOW};
	c->rsrc = (struct mux_src){rfd == wfd ? SRC_BOTH : SRC_READ, c};
	c->wsrc = (struct mux_src){SRC_WRITE, c};
	c->next = m->chans;
	m->chans = c;
	struct epoll_event ev = {.events = 0};
	if (rfd >= 0) {
		ev.data.ptr = &c->rsrc;
		ev.events = EPOLLIN;
		if (set_nonblock(rfd) < 0 || epoll_ctl(m->epfd, EPOLL_CTL_ADD, rfd, &ev) < 0)
			goto fail;
		c->rev = EPOLLIN;
	}
	if (wfd >= 0 && wfd != rfd) {
		ev.data.ptr = &c->wsrc;
		ev.events = 0;
		if (set_nonblock(wfd) < 0 || epoll_ctl(m->epfd, EPOLL_CTL_ADD, wfd, &ev) < 0)
			goto fail;
	}
	return 0;
fail:
	bl_error_errno(e, errno, "mux channel %u", id);
	chan_free(m, c);
	return -1;
}

/* What a channel's fds should be watched for, now. */
static void chan_rewatch(struct mux *m, struct mux_chan *c)
{
	bool reading = c->rfd >= 0 && !c->closing && !c->rdone && c->credit > 0 &&
		       m->out_len - m->out_off < MUX_OUT_HIGH;
	bool writing = c->pend_len > 0;
	if (c->rfd >= 0 && c->rfd == c->wfd) {
		watch(m, c->rfd, &c->rev,
		      (reading ? (uint32_t)EPOLLIN : 0u) | (writing ? (uint32_t)EPOLLOUT : 0u),
		      &c->rsrc, false);
		return;
	}
	watch(m, c->rfd, &c->rev, reading ? EPOLLIN : 0, &c->rsrc, false);
	watch(m, c->wfd, &c->wev, writing ? EPOLLOUT : 0, &c->wsrc, true);
}

/* Give back the credit of what was delivered: in batches, or all of it
 * once nothing waits.  Not while the port's queue is above MUX_OUT_HIGH:
 * a peer that sends tiny frames and never reads the port would have a
 * CREDIT queued per frame, without bound; owed only grows, and mux_run
 * gives it once the queue drained. */
static void give_credit(struct mux *m, struct mux_chan *c)
{
	if (c->owed == 0 || (c->pend_len && c->owed < MUX_WINDOW / 4) ||
	    m->out_len - m->out_off >= MUX_OUT_HIGH)
		return;
	uint8_t v[4];
	put32(v, c->owed);
	if (mux_send(m, MUX_CREDIT, c->id, v, sizeof v) == 0)
		c->owed = 0;
}

/* Write what the channel holds to its fd.  false: the channel is gone. */
static bool chan_deliver(struct mux *m, struct mux_chan *c)
{
	while (c->pend_len) {
		ssize_t n = write_nosig(c->wfd, c->pend + c->pend_off, c->pend_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) { /* its reader is gone */
			chan_end(m, c);
			return false;
		}
		c->pend_off += (size_t)n;
		c->pend_len -= (size_t)n;
		c->owed += (uint32_t)n;
	}
	if (c->pend_len == 0)
		c->pend_off = 0;
	if (c->closing && c->pend_len == 0) {
		chan_free(m, c);
		return false;
	}
	if (c->rdone && c->pend_len == 0) {
		chan_end(m, c);
		return false;
	}
	give_credit(m, c);
	chan_rewatch(m, c);
	return true;
}

/* Read what the credit allows into a DATA frame. */
static void chan_read(struct mux *m, struct mux_chan *c)
{
	size_t want = c->credit < MUX_DATA_CHUNK ? c->credit : MUX_DATA_CHUNK;
	if (want == 0 || reserve(m, MUX_HEADER_SIZE + want) < 0) {
		chan_rewatch(m, c);
		return;
	}
	ssize_t n;
	do
		n = read(c->rfd, m->out + m->out_len + MUX_HEADER_SIZE, want);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		/* Deliver what came for it first: a socket's peer may still read.
		 * rdone: the ended rfd is no longer watched (it would stay ready). */
		if (c->wfd >= 0 && c->wfd != c->rfd && c->pend_len) {
			c->rdone = true;
			chan_rewatch(m, c);
			return;
		}
		chan_end(m, c);
		return;
	}
	struct mux_hdr h = {.chan = c->id, .type = MUX_DATA, .len = (uint32_t)n};
	mux_hdr_put(m->out + m->out_len, &h);
	m->out_len += MUX_HEADER_SIZE + (size_t)n;
	c->credit -= (uint32_t)n;
	watch_port(m);
	chan_rewatch(m, c);
}

/* ---- frames from the peer ---- */

static int on_data(struct mux *m, struct mux_chan *c, const uint8_t *p, uint32_t len, bl_error *e)
{
	if (!c || c->wfd < 0)
		return 0; /* closed on our side: in flight, dropped */
	if ((uint64_t)c->pend_len + c->owed + len > MUX_WINDOW)
		return bl_error_set(e, EPROTO, "mux channel %u: data beyond its credit", c->id);
	if (c->pend_len == 0) { /* straight through if it can */
		ssize_t n;
		do
			n = write_nosig(c->wfd, p, len);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			chan_end(m, c);
			return 0;
		}
		if (n > 0) {
			p += n;
			len -= (uint32_t)n;
			c->owed += (uint32_t)n;
		}
	}
	if (len) {
		if (!c->pend && !(c->pend = malloc(MUX_WINDOW)))
			return bl_error_errno(e, ENOMEM, "mux channel %u", c->id);
		if (c->pend_off + c->pend_len + len > MUX_WINDOW) {
			memmove(c->pend, c->pend + c->pend_off, c->pend_len);
			c->pend_off = 0;
		}
		memcpy(c->pend + c->pend_off + c->pend_len, p, len);
		c->pend_len += len;
	}
	give_credit(m, c);
	chan_rewatch(m, c);
	return 0;
}

static int on_frame(struct mux *m, const struct mux_hdr *h, const uint8_t *p, bl_error *e)
{
	struct mux_chan *c = h->chan == MUX_CHAN_CONTROL ? NULL : find(m, h->chan);
	switch (h->type) {
	case MUX_DATA:
		return on_data(m, c, p, h->len, e);
	case MUX_CREDIT:
		if (c) {
			uint64_t credit = (uint64_t)c->credit + get32(p);
			if (credit > MUX_WINDOW)
				return bl_error_set(e, EPROTO, "mux channel %u: credit beyond the window",
						    h->chan);
			c->credit = (uint32_t)credit;
			chan_rewatch(m, c);
		}
		return 0;
	case MUX_CLOSE:
		if (c) {
			c->closing = true;
			(void)chan_deliver(m, c);
		}
		return 0;
	default:
		return m->control(m->ctx, h, p, e);
	}
}

/* Parse what came on the port, at most MAX_FRAMES frames a call (a
 * flooding peer cannot starve the channels).  0; -1 with e at its end or a
 * violation. */
#define MAX_FRAMES 256
static int port_read(struct mux *m, bl_error *e)
{
	for (int frames = 0; frames < MAX_FRAMES;) {
		size_t want = MUX_HEADER_SIZE;
		struct mux_hdr h;
		if (m->in_have >= MUX_HEADER_SIZE) {
			mux_hdr_get(m->in, &h);
			if (mux_hdr_check(&h, e) < 0)
				return -1;
			want += h.len;
			if (m->in_have == want) {
				m->in_have = 0;
				frames++;
				if (on_frame(m, &h, m->in + MUX_HEADER_SIZE, e) < 0)
					return -1;
				continue;
			}
		}
		ssize_t n = read(m->port, m->in + m->in_have, want - m->in_have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0)
			return bl_error_errno(e, errno, "read the port");
		if (n == 0) {
			m->port_eof = true;
			return bl_error_set(e, EPIPE, "the port closed");
		}
		m->in_have += (size_t)n;
	}
	return 0;
}

/* ---- the loop's side ---- */

int mux_init(struct mux *m, int port, mux_control_fn control, void *ctx, bl_error *e)
{
	memset(m, 0, sizeof *m);
	m->port = port;
	m->control = control;
	m->ctx = ctx;
	m->epfd = epoll_create1(EPOLL_CLOEXEC);
	m->in = malloc(MUX_HEADER_SIZE + MUX_MAX_PAYLOAD);
	if (m->epfd < 0 || !m->in)
		return bl_error_errno(e, errno ? errno : ENOMEM, "mux");
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &port_src};
	if (set_nonblock(port) < 0 || epoll_ctl(m->epfd, EPOLL_CTL_ADD, port, &ev) < 0)
		return bl_error_errno(e, errno, "mux: the port");
	return 0;
}

static int port_error(bl_error *e)
{
	return bl_error_errno(e, errno ? errno : EPIPE, "write the port");
}

/* The batch's events are done with: what they may name can go. */
static int run_end(struct mux *m, int rc)
{
	free_dead(m);
	return rc;
}

int mux_run(struct mux *m, bl_error *e)
{
	struct epoll_event evs[MAX_EVENTS];
	int n;
	do
		n = epoll_wait(m->epfd, evs, MAX_EVENTS, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return run_end(m, bl_error_errno(e, errno, "mux: epoll_wait"));
	/* A channel freed by an earlier event of this batch is dead, not yet
	 * freed (chan_free): its entries are skipped. */
	for (int i = 0; i < n; i++) {
		struct mux_src *s = evs[i].data.ptr;
		uint32_t ev = evs[i].events;
		if (s->role == SRC_PORT) {
			if ((ev & EPOLLOUT) && port_write(m) < 0)
				return run_end(m, port_error(e));
			if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && port_read(m, e) < 0)
				return run_end(m, -1);
			continue;
		}
		struct mux_chan *c = s->ch;
		if (c->dead)
			continue;
		if (s->role != SRC_READ && (ev & (EPOLLOUT | EPOLLERR)) && c->pend_len &&
		    !chan_deliver(m, c))
			continue;
		if (s->role != SRC_WRITE && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->rev)
			chan_read(m, c);
		else if (s->role == SRC_WRITE && (ev & (EPOLLHUP | EPOLLERR)) && !c->pend_len)
			chan_end(m, c); /* a pipe whose reader is gone */
	}
	/* Channels held back by a full port resume once it drained, and the
	 * credit held back with them is given. */
	if (m->out_len - m->out_off < MUX_OUT_HIGH)
		for (struct mux_chan *c = m->chans; c; c = c->next) {
			give_credit(m, c);
			chan_rewatch(m, c);
		}
	if (port_write(m) < 0)
		return run_end(m, port_error(e));
	return run_end(m, 0);
}

void mux_free(struct mux *m)
{
	while (m->chans)
		chan_free(m, m->chans);
	free_dead(m);
	if (m->epfd >= 0)
		close(m->epfd);
	if (m->port >= 0) /* taken over by mux_init */
		close(m->port);
	m->port = -1;
	free(m->in);
	free(m->out);
	m->in = m->out = NULL;
	m->epfd = -1;
}

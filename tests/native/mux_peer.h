/*
 * mux_peer.h - what test_mux and fuzz_mux share: a mux under test over one
 * end of a socketpair "port", and a raw peer at the other end that writes
 * frames (and garbage) the way a hostile guest could.
 */
#ifndef BOXLITE_TEST_MUX_PEER_H
#define BOXLITE_TEST_MUX_PEER_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "common/mux.h"

/* Open fds of this process: a leak check around a test. */
static inline int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	CHECK(d);
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static inline void nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	CHECK(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
}

/* A frame's bytes into out (MUX_HEADER_SIZE + len of room); its size. */
static inline size_t put_frame(uint8_t *out, uint32_t chan, uint16_t type, uint16_t flags,
			       const void *payload, uint32_t len)
{
	struct mux_hdr h = {.chan = chan, .type = type, .flags = flags, .len = len};
	mux_hdr_put(out, &h);
	if (len)
		memcpy(out + MUX_HEADER_SIZE, payload, len);
	return MUX_HEADER_SIZE + len;
}

/* Whether fd has something for us within ms. */
static inline bool ready_within(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, ms) == 1;
}

/* Call mux_run while its epoll set is ready, up to rounds times: 0, or -1
 * with e as mux_run left it. */
static inline int run_idle(struct mux *m, int rounds, bl_error *e)
{
	for (int i = 0; i < rounds && ready_within(m->epfd, 0); i++)
		if (mux_run(m, e) < 0)
			return -1;
	return 0;
}

#endif

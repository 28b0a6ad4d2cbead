/* pty.c - a pseudo-terminal for an execution started with BL_EXEC_TTY. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

int pty_resize(int master, uint16_t rows, uint16_t cols)
{
	struct winsize ws = {.ws_row = rows, .ws_col = cols};
	return ioctl(master, TIOCSWINSZ, &ws) < 0 ? errno : 0;
}

int pty_open(uint16_t rows, uint16_t cols, int *master, char *slave, size_t cap)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return errno;
	int err = 0;
	int fl;
	if (grantpt(m) < 0 || unlockpt(m) < 0 || (err = ptsname_r(m, slave, cap)) != 0 ||
	    (err = pty_resize(m, rows ? rows : 24, cols ? cols : 80)) != 0 ||
	    (fl = fcntl(m, F_GETFL)) < 0 || fcntl(m, F_SETFL, fl | O_NONBLOCK) < 0) {
		err = err ? err : errno;
		close(m);
		return err;
	}
	*master = m;
	return 0;
}

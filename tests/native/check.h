/* check.h - a minimal assertion harness for the native unit tests. */
#ifndef BOXLITE_TEST_CHECK_H
#define BOXLITE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(1);                                                             \
		}                                                                            \
	} while (0)

#define RUN(test)                                  \
	do {                                       \
		test();                            \
		fprintf(stderr, "ok  %s\n", #test); \
	} while (0)

#endif

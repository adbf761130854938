/* check: assertions for tests that survive NDEBUG and report where they failed. */
#ifndef EFFNET_TEST_CHECK_H
#define EFFNET_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_failures;

#define CHECK(cond)                                                                  \
        do {                                                                         \
                if (!(cond)) {                                                       \
                        fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
                        check_failures++;                                            \
                }                                                                    \
        } while (0)

#define CHECK_MSG(cond, ...)                                                         \
        do {                                                                         \
                if (!(cond)) {                                                       \
                        fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
                        fprintf(stderr, __VA_ARGS__);                                \
                        fputc('\n', stderr);                                         \
                        check_failures++;                                            \
                }                                                                    \
        } while (0)

/* Stops the test at once when what follows would only crash. */
#define REQUIRE(cond)                                                                \
        do {                                                                         \
                if (!(cond)) {                                                       \
                        fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
                        exit(1);                                                     \
                }                                                                    \
        } while (0)

#define CHECK_DONE() (check_failures ? (fprintf(stderr, "%d check(s) failed\n", check_failures), 1) : 0)

#endif

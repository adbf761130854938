/* check: assertions for tests that survive NDEBUG and report where they failed. */
#ifndef EFFNET_TEST_CHECK_H
#define EFFNET_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Integer comparisons that print both sides: "got 3, want 4". */
#define CHECK_EQ(got, want)                                                          \
        do {                                                                         \
                long long check_got_ = (long long)(got), check_want_ = (long long)(want); \
                if (check_got_ != check_want_) {                                     \
                        fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s: got %lld, want %lld\n", \
                                __FILE__, __LINE__, #got, #want, check_got_, check_want_); \
                        check_failures++;                                            \
                }                                                                    \
        } while (0)

/* The string s contains want (both printed when it does not). */
#define CHECK_CONTAINS(s, want)                                                      \
        do {                                                                         \
                const char *check_s_ = (s), *check_w_ = (want);                      \
                if (!check_s_ || !strstr(check_s_, check_w_)) {                      \
                        fprintf(stderr, "%s:%d: CHECK_CONTAINS failed: \"%s\" does not contain \"%s\"\n", \
                                __FILE__, __LINE__, check_s_ ? check_s_ : "(null)", check_w_); \
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

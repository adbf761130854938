/* Fuzz target for the query parameters of POST /v1/classify (top_k, parsed by
 * api_parse_top_k in src/server/api.c from the value libmicrohttpd splits out
 * of the query string). The input's first two bytes pick the model's class
 * count (1..2048), the rest is the value as the client sent it, cut at the
 * first NUL as a C string would be; fewer than two bytes stand for an absent
 * parameter. The parser must agree with a plain reading of its contract:
 * decimal digits only (any number of them: leading zeros are allowed) whose
 * value lies in 1..classes, else -EINVAL with the out-parameter untouched; absent gives min(API_DEFAULT_TOP_K, classes). */
#include "api.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The contract, written independently of the parser: -1 when rejected. */
static long expected(const char *s, int classes)
{
        long v = 0;
        size_t n = strlen(s);

        if (n < 1)
                return -1;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -1;
                if (v <= 1000000)  /* past every class count: stays out of range */
                        v = v * 10 + (s[i] - '0');
        }
        return v >= 1 && v <= classes ? v : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const int sentinel = -12345;
        int k = sentinel;

        if (size < 2) {
                int classes = size == 1 ? 1 + data[0] % 8 : 1000;
                if (api_parse_top_k(NULL, classes, &k) != 0 ||
                    k != (API_DEFAULT_TOP_K < classes ? API_DEFAULT_TOP_K : classes))
                        abort();
                return 0;
        }
        int classes = 1 + (((int)data[0] << 8 | data[1]) & 0x7ff);
        /* Exact-size copy, so that a read past the terminator is caught. */
        size_t n = strnlen((const char *)data + 2, size - 2);
        char *s = malloc(n + 1);
        if (!s)
                return 0;
        memcpy(s, data + 2, n);
        s[n] = '\0';
        long want = expected(s, classes);
        int ret = api_parse_top_k(s, classes, &k);
        if (want < 0 ? ret != -EINVAL || k != sentinel : ret != 0 || k != want)
                abort();
        free(s);
        return 0;
}

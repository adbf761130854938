/* Fuzz target for the multipart/form-data parser: the input is a
 * Content-Type value up to the first newline, then the body. Any input must
 * parse or fail with a known code and a message, and every part must lie
 * inside the body, in order. */
#include "multipart.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct multipart_part parts[8];
        char ctype[256], boundary[MULTIPART_MAX_BOUNDARY + 1], err[256];
        const uint8_t *nl = memchr(data, '\n', size < sizeof ctype ? size : sizeof ctype - 1);
        int n = -1;

        if (!nl)
                return 0;
        memcpy(ctype, data, (size_t)(nl - data));
        ctype[nl - data] = '\0';
        /* The body gets its own exact-size buffer, so that reads past its end
         * are caught by the sanitizers. */
        size_t len = size - (size_t)(nl - data) - 1;
        uint8_t *body = malloc(len ? len : 1);
        if (!body)
                return 0;
        memcpy(body, nl + 1, len);
        if (multipart_boundary(ctype, boundary) < 0) {
                free(body);
                return 0;
        }
        if (strlen(boundary) < 1 || strlen(boundary) > MULTIPART_MAX_BOUNDARY)
                abort();
        memset(err, 'x', sizeof err);
        int r = multipart_parse(body, len, boundary, parts, 8, &n, err, sizeof err);
        if (r < 0) {
                if ((r != -EBADMSG && r != -E2BIG) || n != -1 || !memchr(err, '\0', sizeof err) || !err[0])
                        abort();
        } else {
                if (n < 1 || n > 8)
                        abort();
                const uint8_t *prev = body;
                for (int i = 0; i < n; i++) {
                        if (parts[i].data < prev || parts[i].data + parts[i].len > body + len)
                                abort();
                        if ((const uint8_t *)parts[i].headers < body ||
                            (const uint8_t *)parts[i].headers + parts[i].headers_len > parts[i].data)
                                abort();
                        prev = parts[i].data + parts[i].len;
                }
        }
        free(body);
        return 0;
}

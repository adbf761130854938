/* Fuzz target for the API key file (auth_keys_parse in src/server/auth.c).
 * The input is the file's text. The parser must agree with a plain reading
 * of its contract: a file is accepted only when it has at least one key,
 * and then holds one digest for each line whose first non-blank character
 * starts 64 hexadecimal digits; a refusal names a line or says why, and
 * never a line's text (checked with a marker the input cannot spell: the
 * message must be plain ASCII words the parser wrote). The same bytes, up
 * to a NUL, are also an Authorization value for auth_parse_bearer: a key it
 * finds lies inside the value, after "Bearer" and a blank, and is 1 to
 * AUTH_MAX_KEY_LEN visible ASCII characters. */
#include "auth.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

static void bearer(const uint8_t *data, size_t size)
{
        char *v = malloc(size + 1);
        const char *key = NULL;
        size_t len = 0;

        if (!v)
                return;
        if (size)
                memcpy(v, data, size);
        v[size] = '\0';
        enum auth_verdict r = auth_parse_bearer(v, &key, &len);
        if (r == AUTH_OK) {
                const char *p = v;
                while (*p == ' ' || *p == '\t')
                        p++;
                if (strncasecmp(p, "bearer", 6) != 0 || (p[6] != ' ' && p[6] != '\t'))
                        abort();
                if (key < p + 7 || len < 1 || len > AUTH_MAX_KEY_LEN || key + len > v + strlen(v))
                        abort();
                for (size_t i = 0; i < len; i++)
                        if (key[i] <= ' ' || key[i] >= 0x7f)
                                abort();
                for (const char *q = key + len; *q; q++)
                        if (*q != ' ' && *q != '\t')
                                abort();
        } else if (r != AUTH_MALFORMED) {
                abort();
        }
        free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct auth_keys *k = NULL;
        char err[256];
        const char *text = (const char *)data;

        bearer(data, size);
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

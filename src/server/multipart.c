/* multipart: a bounded parser of multipart/form-data bodies. */
#include "multipart.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

int multipart_boundary(const char *content_type, char *ret_boundary)
{
        const char *p = content_type ? strchr(content_type, ';') : NULL;

        while (p) {
                p++;
                while (*p == ' ' || *p == '\t')
                        p++;
                if (strncasecmp(p, "boundary=", 9) != 0) {
                        p = strchr(p, ';');
                        continue;
                }
                p += 9;
                size_t n;
                if (*p == '"') {
                        const char *end = strchr(++p, '"');
                        if (!end)
                                return -EBADMSG;
                        n = (size_t)(end - p);
                } else {
                        n = strcspn(p, "; \t");
                }
                if (n < 1 || n > MULTIPART_MAX_BOUNDARY)
                        return -EBADMSG;
                memcpy(ret_boundary, p, n);
                ret_boundary[n] = '\0';
                return 0;
        }
        return -EBADMSG;
}

static bool starts_with(const uint8_t *p, const uint8_t *end, const void *s, size_t n)
{
        return (size_t)(end - p) >= n && memcmp(p, s, n) == 0;
}

/* Where the first part's delimiter line goes on, or NULL when the body has
 * no delimiter: the first delimiter opens the body or follows a preamble
 * line. */
static const uint8_t *first_delimiter(const uint8_t *body, size_t len, const char *delim, size_t dlen)
{
        const uint8_t *d;

        if (starts_with(body, body + len, delim + 2, dlen - 2))
                return body + dlen - 2;
        d = memmem(body, len, delim, dlen);
        return d ? d + dlen : NULL;
}

/* Checks that every line of a header block [p, blank) is "Name: value";
 * part is the part's number from 1. */
static int check_header_lines(const uint8_t *body, const uint8_t *p, const uint8_t *blank, int part, char *err,
                              size_t err_len)
{
        for (const uint8_t *line = p; line < blank;) {
                const uint8_t *eol = memmem(line, (size_t)(blank - line), "\r\n", 2);
                if (!eol)
                        eol = blank;
                if (!memchr(line, ':', (size_t)(eol - line)))
                        return err_set(err, err_len, -EBADMSG, "multipart: part %d: malformed header at byte %zu",
                                       part, (size_t)(line - body));
                line = eol + 2;
        }
        return 0;
}

/* The header block at p, up to the blank line; empty when CRLF follows.
 * Returns its length and where the content starts. */
static int part_headers(const uint8_t *body, const uint8_t *p, const uint8_t *end, int part, char *err,
                        size_t err_len, size_t *ret_headers_len, const uint8_t **ret_content)
{
        size_t window = (size_t)(end - p);
        const uint8_t *blank;
        int r;

        if (starts_with(p, end, "\r\n", 2)) {
                *ret_headers_len = 0;
                *ret_content = p + 2;
                return 0;
        }
        if (window > MULTIPART_MAX_HEADERS + 4)
                window = MULTIPART_MAX_HEADERS + 4;
        blank = memmem(p, window, "\r\n\r\n", 4);
        if (!blank)
                return err_set(err, err_len, -EBADMSG,
                               "multipart: part %d: headers not ended by a blank line (byte %zu)", part,
                               (size_t)(p - body));
        if ((r = check_header_lines(body, p, blank, part, err, err_len)) < 0)
                return r;
        *ret_headers_len = (size_t)(blank - p);
        *ret_content = blank + 4;
        return 0;
}

int multipart_parse(const uint8_t *body, size_t len, const char *boundary, struct multipart_part *parts,
                    int max_parts, int *ret_n, char *err, size_t err_len)
{
        char delim[MULTIPART_MAX_BOUNDARY + 5]; /* "\r\n--" boundary */
        size_t blen = strlen(boundary);
        const uint8_t *end = body + len, *p;
        int n = 0, r;

        if (blen < 1 || blen > MULTIPART_MAX_BOUNDARY)
                return err_set(err, err_len, -EBADMSG, "multipart: bad boundary");
        memcpy(delim, "\r\n--", 4);
        memcpy(delim + 4, boundary, blen);
        size_t dlen = blen + 4;

        p = first_delimiter(body, len, delim, dlen);
        if (!p)
                return err_set(err, err_len, -EBADMSG, "multipart: no boundary delimiter in the body");
        for (;;) {
                if (starts_with(p, end, "--", 2)) {
                        if (n == 0)
                                return err_set(err, err_len, -EBADMSG, "multipart: no parts");
                        *ret_n = n;
                        return 0;
                }
                while (p < end && (*p == ' ' || *p == '\t'))
                        p++;
                if (!starts_with(p, end, "\r\n", 2))
                        return err_set(err, err_len, -EBADMSG, "multipart: bad delimiter line at byte %zu",
                                       (size_t)(p - body));
                p += 2;
                const uint8_t *headers = p, *content = p;
                size_t headers_len = 0;
                if ((r = part_headers(body, p, end, n + 1, err, err_len, &headers_len, &content)) < 0)
                        return r;
                const uint8_t *next = memmem(content, (size_t)(end - content), delim, dlen);
                if (!next)
                        return err_set(err, err_len, -EBADMSG,
                                       "multipart: part %d: no closing boundary (truncated body?)", n + 1);
                if (n == max_parts)
                        return err_set(err, err_len, -E2BIG, "multipart: more than %d parts", max_parts);
                parts[n++] = (struct multipart_part){ .data = content, .len = (size_t)(next - content),
                                                 .headers = (const char *)headers, .headers_len = headers_len };
                p = next + dlen;
        }
}

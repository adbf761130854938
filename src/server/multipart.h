/* multipart: a bounded parser of multipart/form-data bodies (RFC 7578,
 * RFC 2046 section 5.1) that the http module hands complete bodies to.
 * Pure and reentrant: parts point into the caller's body, nothing is copied
 * or allocated. */
#ifndef EFFNET_SERVER_MULTIPART_H
#define EFFNET_SERVER_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#define MULTIPART_MAX_BOUNDARY 70
/* Headers of one part larger than this are malformed (ours are a few lines). */
#define MULTIPART_MAX_HEADERS 8192

struct multipart_part {
        const uint8_t *data;   /* into the body */
        size_t len;
        const char *headers;   /* into the body: the part's header block, */
        size_t headers_len;    /* CRLF-separated, without the blank line */
};

/* Copies the boundary parameter of a Content-Type value such as
 * `multipart/form-data; boundary="abc"` into ret_boundary (at least
 * MULTIPART_MAX_BOUNDARY + 1 bytes). -EBADMSG when it is missing,
 * empty or longer than 70 characters. */
int multipart_boundary(const char *content_type, char *ret_boundary);

/* Splits body into its parts, in order. Returns -EBADMSG for a malformed
 * body (no opening or closing delimiter, a part without its blank line or
 * with oversized headers, no parts), -E2BIG for more than max_parts parts;
 * err names the problem and the byte offset. parts: max_parts entries;
 * *ret_n is written on success only. */
int multipart_parse(const uint8_t *body, size_t len, const char *boundary, struct multipart_part *parts,
                    int max_parts, int *ret_n, char *err, size_t err_len);

#endif

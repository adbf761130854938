/* Unit test of the multipart/form-data parser (src/server/multipart.c). */
#include "multipart.h"
#include "check.h"

#include <errno.h>
#include <string.h>

/* The message of the last failed parse: the offsets it names are checked. */
static char err[256];

static int parse(const char *body, const char *boundary, struct multipart_part *parts, int max, int *n)
{
        err[0] = 0;
        return multipart_parse((const uint8_t *)body, strlen(body), boundary, parts, max, n, err, sizeof err);
}

static int part_is(const struct multipart_part *p, const char *want)
{
        return p->len == strlen(want) && memcmp(p->data, want, p->len) == 0;
}

int main(void)
{
        struct multipart_part parts[4];
        char b[MULTIPART_MAX_BOUNDARY + 1];
        int n = -1;

        /* Boundary parameter. */
        CHECK(multipart_boundary("multipart/form-data; boundary=abc", b) == 0 && strcmp(b, "abc") == 0);
        CHECK(multipart_boundary("multipart/form-data;charset=x; BOUNDARY=\"a b;c\"", b) == 0 &&
              strcmp(b, "a b;c") == 0);
        CHECK(multipart_boundary("multipart/form-data", b) == -EBADMSG);
        CHECK(multipart_boundary("multipart/form-data; boundary=", b) == -EBADMSG);
        CHECK(multipart_boundary("multipart/form-data; boundary=\"abc", b) == -EBADMSG);
        CHECK(multipart_boundary(NULL, b) == -EBADMSG);
        char longb[120] = "multipart/form-data; boundary=";
        memset(longb + strlen(longb), 'x', 71);
        CHECK(multipart_boundary(longb, b) == -EBADMSG);

        /* Two parts in order, with headers, binary content and a CRLF inside. */
        const char *ok = "--XY\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a.jpg\"\r\n"
                         "Content-Type: image/jpeg\r\n\r\nAAA\r\nA\r\n"
                         "--XY\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nBB\r\n--XY--\r\nepilogue";
        CHECK(parse(ok, "XY", parts, 4, &n) == 0 && n == 2);
        CHECK(part_is(&parts[0], "AAA\r\nA") && part_is(&parts[1], "BB"));
        CHECK(parts[0].headers_len > 0 && memcmp(parts[0].headers, "Content-Disposition", 19) == 0);

        /* Preamble, padding after the delimiter, a part without headers, an empty part. */
        n = -1;
        CHECK(parse("preamble\r\n--XY \t\r\n\r\ndata\r\n--XY\r\nA: b\r\n\r\n\r\n--XY--", "XY", parts, 4, &n) == 0 &&
              n == 2 && part_is(&parts[0], "data") && parts[1].len == 0);

        /* Limits and malformed bodies; n untouched on failure; each message
         * names the part and the byte offset where the body went wrong. */
        n = -1;
        CHECK_EQ(parse(ok, "XY", parts, 1, &n), -E2BIG);
        CHECK_CONTAINS(err, "more than 1 parts");
        CHECK_EQ(parse("", "XY", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "no boundary delimiter");
        CHECK_EQ(parse("--XY--\r\n", "XY", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "no parts");
        CHECK_EQ(parse("--XY\r\nA: b\r\n\r\ndata", "XY", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "part 1: no closing boundary");
        CHECK_EQ(parse("--XY\r\nA: b\r\ndata\r\n--XY--", "XY", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "part 1: headers not ended by a blank line (byte 6)");
        CHECK_EQ(parse("--XY\r\nA: b\r\n\r\nd\r\n--XY\r\nnot a header\r\n\r\nd\r\n--XY--", "XY", parts, 4, &n),
                 -EBADMSG);
        CHECK_CONTAINS(err, "part 2: malformed header at byte 23");
        CHECK_EQ(parse("--XYjunk\r\n\r\nd\r\n--XY--", "XY", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "bad delimiter line at byte 4");
        CHECK_EQ(parse("--XY", "XY", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "bad delimiter line at byte 4");
        CHECK_EQ(parse("no delimiter", "XY", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "no boundary delimiter");
        CHECK_EQ(parse("--XY\r\n\r\nd\r\n--XY--", "", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "bad boundary");
        CHECK_EQ(n, -1);
        /* A header block that never ends stops at the header limit. */
        static char big[MULTIPART_MAX_HEADERS + 64];
        strcpy(big, "--XY\r\nA: ");
        memset(big + strlen(big), 'x', MULTIPART_MAX_HEADERS);
        strcat(big, "\r\n\r\nd\r\n--XY--");
        CHECK_EQ(parse(big, "XY", parts, 4, &n), -EBADMSG);
        CHECK_CONTAINS(err, "part 1: headers not ended by a blank line (byte 6)");
        return CHECK_DONE();
}

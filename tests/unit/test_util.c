/* Unit tests of the shared helpers in common/util: escaping untrusted text. */
#include "check.h"
#include "common/util.h"

#include <string.h>

static void expect_escape(const char *in, size_t out_len, const char *want)
{
        char out[256];
        size_t n = str_escape(in, out, out_len);
        CHECK_MSG(strcmp(out, want) == 0 && n == strlen(want), "escape of \"%s\" (%zu): got \"%s\", want \"%s\"",
                  in, out_len, out, want);
}

int main(void)
{
        expect_escape("GET /healthz", 256, "GET /healthz");
        expect_escape("", 256, "");
        /* Line breaks and other controls cannot start a second log line. */
        expect_escape("/a\n<3>effnetd: forged", 256, "/a\\x0a<3>effnetd: forged");
        expect_escape("a\rb\tc\x1b[31m\x7f", 256, "a\\x0db\\x09c\\x1b[31m\\x7f");
        /* A literal backslash is doubled, so "\x0a" sent as text stays text. */
        expect_escape("\\x0a", 256, "\\\\x0a");
        /* Valid UTF-8 stays; bytes that are not UTF-8 are escaped one by one. */
        expect_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 256, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
        expect_escape("/\xff", 256, "/\\xff");
        expect_escape("\xc0\xaf", 256, "\\xc0\\xaf");               /* overlong '/' */
        expect_escape("\xe0\x80\xaf", 256, "\\xe0\\x80\\xaf");      /* overlong, 3 bytes */
        expect_escape("\xed\xa0\x80", 256, "\\xed\\xa0\\x80");      /* surrogate */
        expect_escape("\xf4\x90\x80\x80", 256, "\\xf4\\x90\\x80\\x80"); /* above U+10FFFF */
        expect_escape("\xc2\x85", 256, "\\xc2\\x85");               /* C1 control NEL */
        expect_escape("ab\xc3", 256, "ab\\xc3");                    /* cut sequence at the end */
        expect_escape("\xc3(", 256, "\\xc3(");
        /* Truncation never splits an escape or a character. */
        expect_escape("abc", 3, "ab");
        expect_escape("a\n", 4, "a");
        expect_escape("a\n", 6, "a\\x0a");
        expect_escape("a\xc3\xa9", 3, "a");
        expect_escape("abc", 1, "");
        return CHECK_DONE();
}

/* Unit tests of the shared helpers in common/util: escaping untrusted text and the parsers. */
#include "check.h"

#include <errno.h>
#include "util.h"

#include <string.h>

static void expect_escape(const char *in, size_t out_len, const char *want)
{
        char out[256];
        size_t n = str_escape(in, out, out_len);
        CHECK_MSG(strcmp(out, want) == 0 && n == strlen(want), "escape of \"%s\" (%zu): got \"%s\", want \"%s\"",
                  in, out_len, out, want);
}

/* One family of parsers: whole strings only, bounds, and a message that
 * names the setting, the (escaped) value and the bounds. */
static void test_parsers(void)
{
        char err[128];
        int64_t i = -7;
        double d = -7;
        bool b = false;

        CHECK(parse_int("n", "42", 0, 100, err, sizeof err, &i) == 0 && i == 42);
        CHECK(parse_int("n", "-5", -10, 10, err, sizeof err, &i) == 0 && i == -5);
        CHECK(parse_int("n", "9223372036854775807", 0, INT64_MAX, err, sizeof err, &i) == 0 && i == INT64_MAX);
        i = -7;
        const char *bad_ints[] = { "", " 1", "+1", "1 ", "1x", "0x10", "1e3", "-", "101", "-11",
                                   "9223372036854775808", "1k" };
        for (size_t k = 0; k < ARRAY_SIZE(bad_ints); k++)
                CHECK_MSG(parse_int("n", bad_ints[k], -10, 100, err, sizeof err, &i) == -EINVAL, "'%s'", bad_ints[k]);
        CHECK_EQ(i, -7);
        CHECK_EQ(parse_int("queue", "lots", 1, 65536, err, sizeof err, &i), -EINVAL);
        CHECK_CONTAINS(err, "queue 'lots' is not an integer in 1..65536");
        CHECK_EQ(parse_int("q", "a\nb", 1, 2, err, sizeof err, &i), -EINVAL);
        CHECK_CONTAINS(err, "'a\\x0ab'");
        CHECK_EQ(parse_int("q", NULL, 1, 2, NULL, 0, &i), -EINVAL);

        CHECK(parse_size("s", "10M", 0, INT64_MAX, err, sizeof err, &i) == 0 && i == 10 << 20);
        CHECK(parse_size("s", "3k", 0, INT64_MAX, err, sizeof err, &i) == 0 && i == 3072);
        CHECK(parse_size("s", "2G", 0, INT64_MAX, err, sizeof err, &i) == 0 && i == 2LL << 30);
        CHECK(parse_size("s", "77", 0, INT64_MAX, err, sizeof err, &i) == 0 && i == 77);
        CHECK_EQ(parse_size("s", "2M", 0, 1 << 20, err, sizeof err, &i), -EINVAL);
        CHECK_EQ(parse_size("s", "1T", 0, INT64_MAX, err, sizeof err, &i), -EINVAL);
        CHECK_EQ(parse_size("s", "9000000000G", 0, INT64_MAX, err, sizeof err, &i), -EINVAL);
        CHECK_EQ(parse_size("s", "M", 0, INT64_MAX, err, sizeof err, &i), -EINVAL);

        CHECK(parse_double("x", "0.001", 0, 0.1, err, sizeof err, &d) == 0 && d == 0.001);
        CHECK(parse_double("x", "-2.5e-1", -1, 1, err, sizeof err, &d) == 0 && d == -0.25);
        d = -7;
        const char *bad_doubles[] = { "", " 1", "+1", "1 ", "nan", "inf", "1e999", "0.2", "x" };
        for (size_t k = 0; k < ARRAY_SIZE(bad_doubles); k++)
                CHECK_MSG(parse_double("x", bad_doubles[k], 0, 0.1, err, sizeof err, &d) == -EINVAL, "'%s'",
                          bad_doubles[k]);
        CHECK(d == -7);
        CHECK_CONTAINS(err, "x 'x' is not a number in 0..0.1");

        CHECK(parse_bool("b", "YES", err, sizeof err, &b) == 0 && b);
        CHECK(parse_bool("b", "off", err, sizeof err, &b) == 0 && !b);
        CHECK(parse_bool("b", "1", err, sizeof err, &b) == 0 && b);
        CHECK_EQ(parse_bool("b", "maybe", err, sizeof err, &b), -EINVAL);
        CHECK_CONTAINS(err, "b 'maybe' is not true or false");
}

int main(void)
{
        test_parsers();
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

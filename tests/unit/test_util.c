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

static void expect_duration(const char *s, int64_t unit, int64_t res, int64_t want)
{
        char err[160] = "";
        int64_t us = -7;
        int r = parse_duration("t", s, unit, res, 0, INT64_MAX, err, sizeof err, &us);
        CHECK_MSG(r == 0 && us == want, "'%s': r %d, got %lld us, want %lld (%s)", s, r, (long long)us,
                  (long long)want, err);
}

static void expect_format(int64_t us, int64_t unit, bool bare, const char *want)
{
        char buf[48];
        duration_format(us, unit, bare, buf, sizeof buf);
        CHECK_MSG(strcmp(buf, want) == 0, "%lld us in %lld: got '%s', want '%s'", (long long)us, (long long)unit,
                  buf, want);
}

/* Durations: a unit suffix, or the setting's own unit when bare; exact
 * decimal arithmetic; bounds and steps; overflow is an error, not a wrap. */
static void test_durations(void)
{
        char err[160];
        int64_t us = -7;

        expect_duration("30", PARSE_S, PARSE_S, 30 * PARSE_S);
        expect_duration("30", PARSE_MS, PARSE_MS, 30 * PARSE_MS);
        expect_duration("250ms", PARSE_S, PARSE_US, 250 * PARSE_MS);
        expect_duration("1.5s", PARSE_MS, PARSE_MS, 1500 * PARSE_MS);
        expect_duration("2m", PARSE_S, PARSE_S, 120 * PARSE_S);
        expect_duration("1h", PARSE_S, PARSE_S, 3600 * PARSE_S);
        expect_duration("0.5h", PARSE_S, PARSE_S, 1800 * PARSE_S);
        expect_duration("1.25m", PARSE_S, PARSE_S, 75 * PARSE_S);
        expect_duration("750us", PARSE_MS, PARSE_US, 750);
        expect_duration("3.5", PARSE_MS, PARSE_US, 3500);
        expect_duration("0.001", PARSE_MS, PARSE_US, 1);
        expect_duration("0", PARSE_S, PARSE_S, 0);
        expect_duration("1.000000000000s", PARSE_S, PARSE_S, PARSE_S);
        expect_duration("9223372036854775807us", PARSE_S, PARSE_US, INT64_MAX);

        const char *bad[] = {
                "", " 1", "+1", "-1", "1 ", "1 s", "s", "1x", "1d", "1S", "1sec", "1.s", ".5s", "1..5", "1e3",
                "0x10", "nan", "inf", "1.5", /* not whole seconds */ "1500ms", "0.0001ms" /* below 1us */,
                "9223372036854775808us", "9223372036854775807s", "99999999999999999999", "2562047789h",
                "1.0000000001s",
        };
        for (size_t k = 0; k < ARRAY_SIZE(bad); k++)
                CHECK_MSG(parse_duration("t", bad[k], PARSE_S, PARSE_S, 0, INT64_MAX, err, sizeof err, &us) == -EINVAL,
                          "'%s' accepted as %lld us", bad[k], (long long)us);
        CHECK_EQ(us, -7);
        CHECK_EQ(parse_duration("t", NULL, PARSE_S, PARSE_S, 0, 1, NULL, 0, &us), -EINVAL);

        /* Bounds, in microseconds whatever the unit written. */
        CHECK(parse_duration("t", "3600s", PARSE_S, PARSE_S, 0, 3600 * PARSE_S, err, sizeof err, &us) == 0);
        CHECK_EQ(parse_duration("t", "61m", PARSE_S, PARSE_S, 0, 3600 * PARSE_S, err, sizeof err, &us), -EINVAL);
        CHECK_EQ(parse_duration("deadline-ms", "0.5ms", PARSE_MS, PARSE_MS, PARSE_MS, 3600 * PARSE_S, err,
                                sizeof err, &us), -EINVAL);
        CHECK_CONTAINS(err, "deadline-ms '0.5ms' is not a duration in 1..3600000ms in steps of 1ms "
                            "(us, ms, s, m or h; bare: ms)");
        CHECK_EQ(parse_duration("body-timeout", "5d", PARSE_S, PARSE_S, 0, 86400 * PARSE_S, err, sizeof err, &us),
                 -EINVAL);
        CHECK_CONTAINS(err, "body-timeout '5d' is not a duration in 0..86400s in steps of 1s");
        CHECK_EQ(parse_duration("t", "1\ns", PARSE_S, PARSE_US, 0, 10, err, sizeof err, &us), -EINVAL);
        CHECK_CONTAINS(err, "'1\\x0as'");

        /* What --print-config shows reads back the same. */
        expect_format(3500, PARSE_MS, true, "3.5");
        expect_format(3500, PARSE_MS, false, "3.5ms");
        expect_format(30 * PARSE_S, PARSE_S, true, "30");
        expect_format(1, PARSE_S, false, "0.000001s");
        expect_format(0, PARSE_MS, true, "0");
        expect_format(120 * PARSE_S, PARSE_M, false, "2m");
        expect_format(90 * PARSE_S, PARSE_M, false, "90s");
        expect_format(1500, PARSE_M, false, "1500us");
        const int64_t samples[] = { 0, 1, 999, 1000, 1001, 123456789, PARSE_H + 1, INT64_MAX };
        const int64_t units[] = { PARSE_US, PARSE_MS, PARSE_S };
        for (size_t i = 0; i < ARRAY_SIZE(samples); i++)
                for (size_t u = 0; u < ARRAY_SIZE(units); u++) {
                        char buf[48];
                        duration_format(samples[i], units[u], true, buf, sizeof buf);
                        us = -1;
                        CHECK_MSG(parse_duration("t", buf, units[u], 1, 0, INT64_MAX, err, sizeof err, &us) == 0 &&
                                  us == samples[i], "%lld us as '%s' reads back as %lld", (long long)samples[i], buf,
                                  (long long)us);
                }
}

int main(void)
{
        test_parsers();
        test_durations();
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

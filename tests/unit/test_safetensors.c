/* Unit test of the safetensors reader and writer: round trips, float16/bfloat16 rounding, hostile headers. */
#include "check.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A stand-in for "not written": ret_* must keep it on failure. */
static struct st_file *const UNTOUCHED = (struct st_file *)&check_failures;

static char tmpdir[64];

/* ---- building files in memory -------------------------------------------- */

struct buf {
        unsigned char *p;
        size_t len;
};

/* Exactly sized heap copy, so that the sanitizers see any read past the end. */
static struct buf make_raw(uint64_t hlen_field, const char *header, size_t header_len, size_t data_len)
{
        struct buf b = { NULL, 8 + header_len + data_len };

        b.p = malloc(b.len ? b.len : 1);
        REQUIRE(b.p);
        for (int i = 0; i < 8; i++)
                b.p[i] = (unsigned char)(hlen_field >> (8 * i));
        memcpy(b.p + 8, header, header_len);
        for (size_t i = 0; i < data_len; i++)
                b.p[8 + header_len + i] = (unsigned char)(i * 7 + 1);
        return b;
}

static struct buf make(const char *header, size_t data_len)
{
        return make_raw(strlen(header), header, strlen(header), data_len);
}

static int has(const char *hay, const char *needle)
{
        return needle == NULL || strstr(hay, needle) != NULL;
}

/* Parses b and frees it; expects code and a message containing each of up to two needles. */
static void expect_buf(int line, struct buf b, int code, const char *needle1, const char *needle2)
{
        char err[256] = "";
        struct st_file *f = UNTOUCHED;
        int r = st_parse(b.p, b.len, err, sizeof err, &f);

        if (r != code || f != UNTOUCHED || !err[0] || !has(err, needle1) || !has(err, needle2)) {
                fprintf(stderr, "line %d: got %d \"%s\", want %d with \"%s\" \"%s\"%s\n", line, r, err, code,
                        needle1 ? needle1 : "", needle2 ? needle2 : "", f != UNTOUCHED ? " (ret_file written)" : "");
                check_failures++;
        }
        if (r == 0 && f != UNTOUCHED)
                st_free(f);
        free(b.p);
}

#define EXPECT(header, data_len, code, n1, n2) expect_buf(__LINE__, make(header, data_len), code, n1, n2)

/* The caller keeps b alive while the file is in use, then frees it. */
static struct st_file *parse_ok(int line, struct buf b)
{
        char err[256] = "";
        struct st_file *f = NULL;
        int r = st_parse(b.p, b.len, err, sizeof err, &f);

        if (r != 0 || !f) {
                fprintf(stderr, "line %d: want success, got %d \"%s\"\n", line, r, err);
                check_failures++;
                return NULL;
        }
        return f;
}

/* ---- hostile headers ----------------------------------------------------- */

#define T(name, dtype, shape, offsets) \
        "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offsets "}"

static void test_hostile_headers(void)
{
        /* JSON level */
        EXPECT("{\"w\":{\"dtype\":\"F32\",", 0, -EBADMSG, "not valid JSON", NULL);
        EXPECT("", 0, -EBADMSG, "not valid JSON", NULL);
        EXPECT("[1,2]", 0, -EBADMSG, "not a JSON object", NULL);
        EXPECT("\"w\"", 0, -EBADMSG, "JSON", NULL);
        EXPECT("{} x", 0, -EBADMSG, "not valid JSON", NULL);
        EXPECT("{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,0]}}", 0, -EBADMSG,
               "JSON", NULL);
        EXPECT("{\"\xff\xfe\":1}", 0, -EBADMSG, "JSON", NULL); /* not UTF-8 */
        EXPECT("{\"w\\u0000x\":" "{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, -EBADMSG, "JSON",
               NULL);
        {
                static const char h[] = "{" T("w", "F32", "[1]", "[0,4]") "}";
                char z[sizeof h + 2];

                /* a NUL byte inside the name, and one after the object */
                memcpy(z, h, sizeof h);
                z[3] = '\0';
                expect_buf(__LINE__, make_raw(sizeof h - 1, z, sizeof h - 1, 4), -EBADMSG, "JSON", NULL);
                memcpy(z, h, sizeof h);
                z[sizeof h - 1] = '\0';
                expect_buf(__LINE__, make_raw(sizeof h, z, sizeof h, 4), -EBADMSG, "JSON", NULL);
        }
        /* jansson alone would skip a NUL right after a number */
        {
                static const char h[] = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1\0],\"data_offsets\":[0,4]}}";

                expect_buf(__LINE__, make_raw(sizeof h - 1, h, sizeof h - 1, 4), -EBADMSG, "NUL byte at byte 38",
                           NULL);
        }

        /* entry structure and field types */
        EXPECT("{\"conv_stem.weight\":5}", 0, -EBADMSG, "conv_stem.weight", "not a JSON object");
        EXPECT("{\"conv_stem.weight\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, -EBADMSG, "conv_stem.weight",
               "data_offsets");
        EXPECT("{\"conv_stem.weight\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -EBADMSG, "conv_stem.weight",
               "missing field \"dtype\"");
        EXPECT("{\"conv_stem.weight\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, -EBADMSG, "conv_stem.weight",
               "missing field \"shape\"");
        EXPECT("{" T("a", "F32", "[1]", "[0,4]") ",\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8],"
               "\"extra\":1}}",
               8, -EBADMSG, "b: unexpected field \"extra\"", NULL);
        EXPECT("{\"w\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -EBADMSG, "w: ", "dtype");
        EXPECT("{\"w\":{\"dtype\":null,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -EBADMSG, "w: ", "dtype");
        EXPECT("{" T("w", "F32", "\"1\"", "[0,4]") "}", 4, -EBADMSG, "w: ", "shape");
        EXPECT("{" T("w", "F32", "[1.0]", "[0,4]") "}", 4, -EBADMSG, "w: ", "shape[0] is not an integer");
        EXPECT("{" T("w", "F32", "[2,true]", "[0,8]") "}", 8, -EBADMSG, "w: ", "shape[1] is not an integer");
        EXPECT("{" T("w", "F32", "[1]", "[0]") "}", 4, -EBADMSG, "w: ", "data_offsets");
        EXPECT("{" T("w", "F32", "[1]", "[0,4,8]") "}", 8, -EBADMSG, "w: ", "data_offsets");
        EXPECT("{" T("w", "F32", "[1]", "[0,\"4\"]") "}", 4, -EBADMSG, "w: ", "data_offsets");
        EXPECT("{" T("w", "F32", "[1]", "{\"a\":0}") "}", 4, -EBADMSG, "w: ", "data_offsets");
        EXPECT("{" T("w", "F32", "[1]", "[-4,0]") "}", 4, -EBADMSG, "w: ", "data_offsets");
        EXPECT("{" T("w", "F32", "[1]", "[0,4.0]") "}", 4, -EBADMSG, "w: ", "data_offsets");

        /* values */
        EXPECT("{" T("blocks.0.0.conv.weight", "F32", "[24,-3,3,3]", "[0,0]") "}", 0, -EBADMSG,
               "blocks.0.0.conv.weight", "shape[1] is negative (-3)");
        EXPECT("{" T("w", "Q4", "[1]", "[0,4]") "}", 4, -EBADMSG, "w: ", "unknown dtype \"Q4\"");
        EXPECT("{" T("w", "f32", "[1]", "[0,4]") "}", 4, -EBADMSG, "w: ", "unknown dtype");
        EXPECT("{" T("w", "F4", "[2]", "[0,1]") "}", 4, -EBADMSG, "w: ", "unknown dtype");
        EXPECT("{" T("w", "F32", "[1,2,3,4,5,6,7,8,9]", "[0,0]") "}", 0, -E2BIG, "w: ", "dimensions");
        EXPECT("{" T("conv_stem.weight", "F32", "[24,3,3,3]", "[0,100]") "}", 64, -EBADMSG,
               "conv_stem.weight: data_offsets [0, 100] exceed data area of 64 bytes", NULL);
        EXPECT("{" T("conv_stem.weight", "F32", "[2,2]", "[0,12]") "}", 16, -EBADMSG, "conv_stem.weight",
               "= 16 bytes, but data_offsets [0, 12] span 12");
        EXPECT("{" T("w", "F16", "[3]", "[0,12]") "}", 16, -EBADMSG, "w: ", "span 12");
        EXPECT("{" T("w", "F32", "[]", "[0,8]") "}", 16, -EBADMSG, "w: ", "= 4 bytes");
        EXPECT("{" T("w", "F32", "[1]", "[8,4]") "}", 16, -EBADMSG, "w: data_offsets [8, 4] begin after end",
               NULL);
        EXPECT("{" T("w", "F32", "[1]", "[9223372036854775807,9223372036854775807]") "}", 16, -EBADMSG, "w: ",
               "exceed");
        EXPECT("{" T("a", "F32", "[4]", "[0,16]") "," T("b", "F32", "[4]", "[8,24]") "}", 32, -EBADMSG,
               "b: data_offsets [8, 24] overlap a [0, 16]", NULL);
        /* the overlap is found whatever the header order, and across a gap */
        EXPECT("{" T("late", "F32", "[2]", "[24,32]") "," T("c", "F32", "[1]", "[0,4]") ","
               T("big", "F32", "[6]", "[4,28]") "}",
               32, -EBADMSG, "late", "big");
        EXPECT("{" T("a", "F32", "[4]", "[0,16]") "," T("same", "F32", "[4]", "[0,16]") "}", 16, -EBADMSG,
               "overlap", "same");
        /* shape product and byte count overflow, offsets kept in range */
        EXPECT("{" T("huge", "F32", "[4294967296,4294967296,4]", "[0,0]") "}", 0, -EBADMSG, "huge: ",
               "element count overflows");
        EXPECT("{" T("huge", "F32", "[9223372036854775807,2]", "[0,0]") "}", 0, -EBADMSG, "huge: ",
               "element count overflows");
        EXPECT("{" T("huge", "F32", "[4611686018427387904]", "[0,0]") "}", 0, -EBADMSG, "huge: ",
               "byte count overflows");
        EXPECT("{" T("huge", "I64", "[2305843009213693952]", "[0,0]") "}", 0, -EBADMSG, "huge: ",
               "byte count overflows");

        /* duplicate keys: the message names the key even when jansson does not */
        EXPECT("{" T("conv_stem.weight", "F32", "[1]", "[0,4]") "," T("conv_stem.weight", "F32", "[1]", "[4,8]")
               "}",
               8, -EBADMSG, "conv_stem.weight: duplicate key", NULL);
        EXPECT("{" T("blocks.5.14.se.conv_reduce.weight", "F32", "[1]", "[0,4]") ","
               T("blocks.5.14.se.conv_reduce.weight", "F32", "[1]", "[4,8]") "}",
               8, -EBADMSG, "blocks.5.14.se.conv_reduce.weight: duplicate key", NULL);
        EXPECT("{" T("a\\\"b\\\\", "F32", "[1]", "[0,4]") " , " T("a\\\"b\\\\", "F32", "[1]", "[4,8]") "}", 8,
               -EBADMSG, "a\"b\\: duplicate key", NULL);
        EXPECT("{" T("", "F32", "[1]", "[0,4]") "," T("", "F32", "[1]", "[4,8]") "}", 8, -EBADMSG,
               "\"\": duplicate key", NULL);
        EXPECT("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -EBADMSG,
               "dtype", "duplicate");

        /* __metadata__ */
        EXPECT("{\"__metadata__\":\"pt\"}", 0, -EBADMSG, "__metadata__", "not a JSON object");
        EXPECT("{\"__metadata__\":{\"format\":1}}", 0, -EBADMSG, "__metadata__", "\"format\" is not a string");
        EXPECT("{\"__metadata__\":{\"a\":\"b\",\"nested\":{}}}", 0, -EBADMSG, "__metadata__", "nested");

        /* hostile names are quoted without control bytes and cut short */
        {
                char h[1024], err[256] = "";
                struct st_file *f = UNTOUCHED;
                struct buf b;

                snprintf(h, sizeof h, "{\"evil\\n\\u001b[31m%0300d\":{\"dtype\":\"Q\",\"shape\":[],\"data_offsets\":[0,0]}}",
                         0);
                b = make(h, 0);
                CHECK(st_parse(b.p, b.len, err, sizeof err, &f) == -EBADMSG && f == UNTOUCHED);
                CHECK(strncmp(err, "evil??[31m000", 13) == 0);
                CHECK(strstr(err, "...: unknown dtype") != NULL);
                for (const char *p = err; *p; p++)
                        CHECK((unsigned char)*p >= 0x20);
                free(b.p);
        }
}

static void test_header_length(void)
{
        static const char h[] = "{" T("w", "F32", "[1]", "[0,4]") "}";
        const size_t hl = sizeof h - 1;

        for (size_t len = 0; len < 8; len++) {
                struct buf b = { calloc(1, len ? len : 1), len };

                REQUIRE(b.p);
                expect_buf(__LINE__, b, -EBADMSG, "too short", NULL);
        }
        expect_buf(__LINE__, make_raw(hl + 5, h, hl, 4), -EBADMSG, "header length", "past the end of the file");
        expect_buf(__LINE__, make_raw(1000, h, hl, 4), -EBADMSG, "header length 1000", NULL);
        expect_buf(__LINE__, make_raw(UINT64_MAX, h, hl, 4), -EBADMSG, "header length 18446744073709551615", NULL);
        expect_buf(__LINE__, make_raw((uint64_t)1 << 63, h, hl, 4), -EBADMSG, "header length", NULL);
        /* shorter than the JSON: the rest becomes part of the data area */
        expect_buf(__LINE__, make_raw(hl - 1, h, hl, 4), -EBADMSG, "JSON", NULL);
        expect_buf(__LINE__, make_raw(0, h, hl, 4), -EBADMSG, "JSON", NULL);

        /* Over ST_MAX_HEADER but inside the file: a limit, refused before the
         * JSON is read (calloc leaves the pages untouched). */
        {
                size_t len = 8 + (size_t)ST_MAX_HEADER + 1;
                struct buf b = { calloc(1, len), len };

                REQUIRE(b.p);
                for (int i = 0; i < 8; i++)
                        b.p[i] = (unsigned char)((uint64_t)(ST_MAX_HEADER + 1) >> (8 * i));
                expect_buf(__LINE__, b, -E2BIG, "limit", NULL);
        }
        /* Exactly ST_MAX_HEADER: read (a header padded with spaces, as
         * writers align it); the cap is the length, not the JSON's size. */
        {
                size_t hl = (size_t)ST_MAX_HEADER;
                char *pad = malloc(hl);
                REQUIRE(pad);
                memset(pad, ' ', hl);
                memcpy(pad, "{}", 2);
                struct buf b = make_raw(hl, pad, hl, 0);
                struct st_file *f = parse_ok(__LINE__, b);
                CHECK(f && st_count(f) == 0);
                st_free(f);
                free(b.p);
                free(pad);
                /* One byte more of JSON: refused before it is parsed, so that
                 * however costly its tree would be, none is built. */
                char *big = malloc(hl + 1);
                REQUIRE(big);
                memset(big, ' ', hl + 1);
                memcpy(big, "{}", 2);
                expect_buf(__LINE__, make_raw(hl + 1, big, hl + 1, 0), -E2BIG, "exceeds the limit of 1048576", NULL);
                free(big);
        }
}

static void test_too_many_tensors(void)
{
        size_t cap = 64 * ((size_t)ST_MAX_TENSORS + 2), len = 0;
        char *h = malloc(cap);

        REQUIRE(h);
        h[len++] = '{';
        for (int i = 0; i <= ST_MAX_TENSORS; i++)
                len += (size_t)snprintf(h + len, cap - len, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}",
                                        i ? "," : "", i);
        h[len++] = '}';
        h[len] = '\0';
        EXPECT(h, 0, -E2BIG, "lists 10001 tensors", "limit");
        free(h);
}

/* ---- valid headers ------------------------------------------------------- */

static void test_valid_parse(void)
{
        /* gaps are allowed; empty tensors may sit anywhere, even inside another;
         * a zero dimension makes any other dimension harmless */
        struct buf keep = make("{\"__metadata__\":{\"format\":\"pt\"},"
                               T("z", "F32", "[3]", "[4,16]") ","
                               T("a", "BF16", "[2,1]", "[20,24]") ","
                               T("empty", "F16", "[0,4611686018427387904,4611686018427387904]", "[8,8]") ","
                               T("s", "I64", "[]", "[24,32]") ","
                               T("flag", "BOOL", "[1]", "[0,1]") "}   ",
                               40);
        struct st_file *f = parse_ok(__LINE__, keep);
        const struct st_tensor *t;

        if (!f) {
                free(keep.p);
                return;
        }
        CHECK(st_count(f) == 5);
        CHECK(st_at(f, 5) == NULL);
        CHECK(st_find(f, "__metadata__") == NULL);
        CHECK(st_find(f, "") == NULL);
        CHECK(st_find(f, "zz") == NULL);
        const char *order[] = { "z", "a", "empty", "s", "flag" };
        for (size_t i = 0; i < 5; i++) {
                CHECK(strcmp(st_at(f, i)->name, order[i]) == 0);
                CHECK(st_find(f, order[i]) == st_at(f, i));
        }
        t = st_find(f, "z");
        CHECK(t->dtype == ST_F32 && strcmp(t->dtype_name, "F32") == 0 && t->ndim == 1 && t->shape[0] == 3);
        CHECK(t->numel == 3 && t->nbytes == 12);
        t = st_find(f, "a");
        CHECK(t->dtype == ST_BF16 && t->ndim == 2 && t->numel == 2 && t->nbytes == 4);
        t = st_find(f, "empty");
        CHECK(t->dtype == ST_F16 && t->ndim == 3 && t->numel == 0 && t->nbytes == 0);
        t = st_find(f, "s");
        CHECK(t->dtype == ST_OTHER && strcmp(t->dtype_name, "I64") == 0 && t->ndim == 0 && t->numel == 1 &&
              t->nbytes == 8);
        t = st_find(f, "flag");
        CHECK(t->dtype == ST_OTHER && strcmp(t->dtype_name, "BOOL") == 0 && t->nbytes == 1);
        f = st_free(f);
        CHECK(f == NULL);
        free(keep.p);
        CHECK(st_free(NULL) == NULL);
        CHECK(st_count(NULL) == 0 && st_at(NULL, 0) == NULL && st_find(NULL, "a") == NULL);

        /* data pointers address the data area, which starts after the header */
        {
                static const char h[] = "{" T("b", "F32", "[1]", "[4,8]") "," T("a", "F32", "[1]", "[0,4]") "}";
                struct buf b = make(h, 8);

                f = parse_ok(__LINE__, b);
                if (f) {
                        CHECK((const unsigned char *)st_find(f, "a")->data == b.p + 8 + strlen(h));
                        CHECK((const unsigned char *)st_find(f, "b")->data == b.p + 8 + strlen(h) + 4);
                        CHECK(st_at(f, 0) == st_find(f, "b"));
                        f = st_free(f);
                }
                free(b.p);
        }
        /* no tensors at all */
        keep = make("{}", 0);
        f = parse_ok(__LINE__, keep);
        CHECK(f && st_count(f) == 0 && st_at(f, 0) == NULL && st_find(f, "a") == NULL);
        f = st_free(f);
        free(keep.p);
        /* a message buffer is optional */
        {
                struct buf b = make("[]", 0);
                struct st_file *g = UNTOUCHED;

                CHECK(st_parse(b.p, b.len, NULL, 0, &g) == -EBADMSG && g == UNTOUCHED);
                free(b.p);
        }
        /* a short message buffer is cut, not overrun */
        {
                struct buf b = make("[]", 0);
                struct st_file *g = UNTOUCHED;
                char err[8];

                memset(err, 'x', sizeof err);
                CHECK(st_parse(b.p, b.len, err, 5, &g) == -EBADMSG && g == UNTOUCHED);
                CHECK(strlen(err) == 4 && err[5] == 'x');
                free(b.p);
        }
}

/* ---- float conversions --------------------------------------------------- */

static uint32_t bits(float x)
{
        uint32_t u;

        memcpy(&u, &x, sizeof u);
        return u;
}

static float from_bits(uint32_t u)
{
        float x;

        memcpy(&x, &u, sizeof x);
        return x;
}

/* The value of a binary16, straight from the definition. */
static double ref_f16(uint16_t h)
{
        int e = (h >> 10) & 0x1f, m = h & 0x3ff;
        double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);

        return h & 0x8000 ? -v : v;
}

static void test_f16_decode(void)
{
        unsigned char src[2 * 65536 + 1];
        static float dst[65536];

        /* from an odd address: the reader must not assume alignment */
        for (uint32_t h = 0; h < 65536; h++) {
                src[1 + 2 * h] = (unsigned char)h;
                src[2 + 2 * h] = (unsigned char)(h >> 8);
        }
        st_to_f32(ST_F16, src + 1, 65536, dst);
        for (uint32_t h = 0; h < 65536; h++) {
                double want = ref_f16((uint16_t)h);

                if (isnan(want)) {
                        /* NaN stays NaN, with sign and payload */
                        CHECK(isnan(dst[h]));
                        CHECK(bits(dst[h]) == (((h & 0x8000) << 16) | 0x7f800000u | (h & 0x3ff) << 13));
                } else if ((double)dst[h] != want || !signbit(dst[h]) != !signbit(want)) {
                        fprintf(stderr, "f16 %04x -> %a, want %a\n", h, (double)dst[h], want);
                        check_failures++;
                }
        }
        CHECK(dst[0x0001] == 0x1p-24f);   /* smallest subnormal */
        CHECK(dst[0x03ff] == 0x3ffp-24f); /* largest subnormal */
        CHECK(dst[0x0400] == 0x1p-14f);   /* smallest normal */
        CHECK(dst[0x7bff] == 65504.0f);
        CHECK(dst[0x7c00] == INFINITY && dst[0xfc00] == -INFINITY);
        CHECK(bits(dst[0x8000]) == 0x80000000u);
}

static void test_bf16_decode(void)
{
        unsigned char src[2 * 65536 + 3];
        static float dst[65536];

        for (uint32_t h = 0; h < 65536; h++) {
                src[3 + 2 * h] = (unsigned char)h;
                src[4 + 2 * h] = (unsigned char)(h >> 8);
        }
        st_to_f32(ST_BF16, src + 3, 65536, dst);
        for (uint32_t h = 0; h < 65536; h++)
                CHECK(bits(dst[h]) == h << 16);
}

static void test_f32_and_other_decode(void)
{
        const uint32_t vals[] = { 0, 0x80000000u, 0x3f800000u, 0x7f800000u, 0x7fc00001u, 0x00000001u, 0x12345678u };
        unsigned char src[4 * 7 + 1];
        float dst[7];

        for (size_t i = 0; i < 7; i++)
                for (int b = 0; b < 4; b++)
                        src[1 + 4 * i + (size_t)b] = (unsigned char)(vals[i] >> (8 * b));
        st_to_f32(ST_F32, src + 1, 7, dst);
        for (size_t i = 0; i < 7; i++)
                CHECK(bits(dst[i]) == vals[i]);
        st_to_f32(ST_OTHER, src + 1, 7, dst);
        for (size_t i = 0; i < 7; i++)
                CHECK(isnan(dst[i]));
        st_to_f32(ST_F32, src, 0, NULL);
}

/* Values around every rounding decision, with the encodings a correct
 * round-to-nearest-even must produce. NaN expectations are checked apart. */
struct cases {
        float *x;
        uint16_t *want;
        size_t n, cap;
};

static void add_case(struct cases *c, float x, uint16_t want)
{
        if (c->n == c->cap) {
                c->cap = c->cap ? 2 * c->cap : 4096;
                c->x = realloc(c->x, c->cap * sizeof *c->x);
                c->want = realloc(c->want, c->cap * sizeof *c->want);
                REQUIRE(c->x && c->want);
        }
        c->x[c->n] = x;
        c->want[c->n++] = want;
}

static void add_signed(struct cases *c, float x, uint16_t want)
{
        add_case(c, x, want);
        add_case(c, -x, (uint16_t)(want | 0x8000));
}

/* Writes the values as dtype, reads the raw stored halves back. */
static void encode_via_file(int dtype, const struct cases *c, uint16_t *out)
{
        char path[128], err[256] = "";
        struct st_writer *w = NULL;
        struct st_file *f = NULL;
        int64_t shape[1] = { (int64_t)c->n };

        snprintf(path, sizeof path, "%s/enc.safetensors", tmpdir);
        REQUIRE(st_writer_new(&w) == 0);
        REQUIRE(st_writer_add(w, "x", dtype, 1, shape, c->x) == 0);
        REQUIRE(st_writer_save(w, path, err, sizeof err) == 0);
        w = st_writer_free(w);
        REQUIRE(st_open(path, err, sizeof err, &f) == 0);
        const struct st_tensor *t = st_find(f, "x");
        REQUIRE(t && t->dtype == dtype && t->nbytes == 2 * c->n);
        const unsigned char *p = t->data;
        for (size_t i = 0; i < c->n; i++)
                out[i] = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
        st_free(f);
        unlink(path);
}

static void check_cases(const char *what, const struct cases *c, const uint16_t *got)
{
        for (size_t i = 0; i < c->n; i++)
                if (got[i] != c->want[i]) {
                        fprintf(stderr, "%s(%a) = %04x, want %04x\n", what, (double)c->x[i], got[i], c->want[i]);
                        if (++check_failures > 50)
                                exit(1);
                }
}

/* Writes c's values as dtype and checks the cases before specials; the six
 * after them must be NaNs (exponent all ones, mantissa not zero) of the
 * case's sign, alternating +/-. Frees c. */
static void check_encoded(int dtype, const char *name, struct cases *c, size_t specials,
                          uint16_t exponent)
{
        uint16_t *got = malloc(c->n * sizeof *got);
        REQUIRE(got);
        encode_via_file(dtype, c, got);
        c->n = specials;
        check_cases(name, c, got);
        for (size_t i = specials; i < specials + 6; i++)
                CHECK((got[i] & exponent) == exponent && (got[i] & (0x7fff & ~exponent)) != 0 &&
                      (got[i] & 0x8000) == (i % 2 ? 0x8000 : 0));
        free(got);
        free(c->x);
        free(c->want);
}

static void test_f16_encode(void)
{
        struct cases c = { 0 };

        for (uint32_t h = 0; h <= 0x7bff; h++) {
                double a = ref_f16((uint16_t)h), b = h == 0x7bff ? 65536.0 : ref_f16((uint16_t)(h + 1));
                float mid = (float)((a + b) / 2); /* exact: one bit more than binary16 */

                add_signed(&c, (float)a, (uint16_t)h);
                add_signed(&c, mid, (uint16_t)(h & 1 ? h + 1 : h));
                add_signed(&c, nextafterf(mid, 0), (uint16_t)h);
                add_signed(&c, nextafterf(mid, INFINITY), (uint16_t)(h + 1));
        }
        add_signed(&c, INFINITY, 0x7c00);
        add_signed(&c, FLT_MAX, 0x7c00);
        add_signed(&c, 1e10f, 0x7c00);
        add_signed(&c, 65536.0f, 0x7c00);
        add_signed(&c, FLT_MIN, 0);
        add_signed(&c, from_bits(1), 0); /* smallest binary32 subnormal */
        add_signed(&c, 0x1p-26f, 0);
        add_signed(&c, 0x1.8p-25f, 0x0001);
        add_signed(&c, 0x1.8p-24f, 0x0002); /* tie between 1 and 2 units: to even */
        add_signed(&c, 0x1.4p-24f, 0x0001);
        add_signed(&c, 0x1.ffcp-15f, 0x0400); /* rounds up out of the subnormals */
        add_signed(&c, 1.0f / 3.0f, 0x3555);
        size_t specials = c.n;
        add_signed(&c, NAN, 0x7e00);
        add_signed(&c, from_bits(0x7f800001u), 0x7e00); /* payload only in the dropped bits */
        add_signed(&c, from_bits(0x7fffffffu), 0x7e00);

        check_encoded(ST_F16, "f16", &c, specials, 0x7c00);
}

static void test_bf16_encode(void)
{
        struct cases c = { 0 };

        for (uint32_t h = 0; h <= 0x7f7f; h++) {
                uint32_t mid = h << 16 | 0x8000; /* midpoints are exact in binary32 */

                add_signed(&c, from_bits(h << 16), (uint16_t)h);
                add_signed(&c, from_bits(mid), (uint16_t)(h & 1 ? h + 1 : h));
                add_signed(&c, from_bits(mid - 1), (uint16_t)h);
                add_signed(&c, from_bits(mid + 1), (uint16_t)(h + 1));
        }
        add_signed(&c, INFINITY, 0x7f80);
        add_signed(&c, FLT_MAX, 0x7f80);
        add_signed(&c, 1.0f / 3.0f, 0x3eab);
        size_t specials = c.n;
        add_signed(&c, NAN, 0);
        add_signed(&c, from_bits(0x7f800001u), 0);
        add_signed(&c, from_bits(0x7fffffffu), 0);

        check_encoded(ST_BF16, "bf16", &c, specials, 0x7f80);
}

/* ---- writer round trip and files ----------------------------------------- */

static int count_entries(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        REQUIRE(d);
        while ((de = readdir(d)))
                n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
        closedir(d);
        return n;
}

static struct buf read_file(const char *path)
{
        struct buf b = { NULL, 0 };
        FILE *fp = fopen(path, "rb");

        REQUIRE(fp);
        REQUIRE(fseek(fp, 0, SEEK_END) == 0);
        b.len = (size_t)ftell(fp);
        rewind(fp);
        b.p = malloc(b.len ? b.len : 1);
        REQUIRE(b.p && fread(b.p, 1, b.len, fp) == b.len);
        fclose(fp);
        return b;
}

static void test_round_trip(void)
{
        char path[128], err[256] = "";
        struct st_writer *w = NULL;
        struct st_file *f = NULL;
        float f32[6], f16[5] = { 0.5f, -2.0f, 65504.0f, 0x1p-24f, -0.0f }, bf16[4] = { 1.0f, -3.5f, 0x1p100f, 0x1p-130f };
        float scalar = 42.0f, out[6];
        const int64_t s23[] = { 2, 3 }, s5[] = { 5 }, s22[] = { 2, 2 }, s04[] = { 0, 4 };
        struct stat st;

        for (int i = 0; i < 6; i++) /* any bit pattern survives F32, NaN payloads included */
                f32[i] = from_bits(0x9e3779b9u * (uint32_t)(i + 1));
        f32[5] = from_bits(0x7fa00001u);
        snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);

        REQUIRE(st_writer_new(&w) == 0);
        CHECK(st_writer_add(w, "layer.f32", ST_F32, 2, s23, f32) == 0);
        CHECK(st_writer_add(w, "layer.f16", ST_F16, 1, s5, f16) == 0);
        CHECK(st_writer_add(w, "a.bf16", ST_BF16, 2, s22, bf16) == 0);
        CHECK(st_writer_add(w, "scalar", ST_F32, 0, NULL, &scalar) == 0);
        CHECK(st_writer_add(w, "empty", ST_F16, 2, s04, NULL) == 0);
        CHECK(st_writer_add(w, "\xc3\xa9t\xc3\xa9", ST_F32, 1, s5, f16) == 0); /* UTF-8 name */

        /* refused additions leave the writer as it was */
        CHECK(st_writer_add(w, "layer.f32", ST_F32, 2, s23, f32) == -EEXIST);
        CHECK(st_writer_add(w, "other", ST_OTHER, 2, s23, f32) == -EINVAL);
        CHECK(st_writer_add(w, "other", 17, 2, s23, f32) == -EINVAL);
        CHECK(st_writer_add(w, "other", ST_F32, ST_MAX_DIMS + 1, s23, f32) == -EINVAL);
        CHECK(st_writer_add(w, "other", ST_F32, -1, s23, f32) == -EINVAL);
        CHECK(st_writer_add(w, "other", ST_F32, 2, (const int64_t[]){ 2, -3 }, f32) == -EINVAL);
        CHECK(st_writer_add(w, "other", ST_F32, 2, s23, NULL) == -EINVAL);
        CHECK(st_writer_add(w, "__metadata__", ST_F32, 2, s23, f32) == -EINVAL);
        CHECK(st_writer_add(w, "bad\xff", ST_F32, 2, s23, f32) == -EINVAL);
        CHECK(st_writer_add(w, NULL, ST_F32, 2, s23, f32) == -EINVAL);
        CHECK(st_writer_add(w, "other", ST_F32, 3, (const int64_t[]){ INT64_MAX, 2, 2 }, f32) == -E2BIG);
        CHECK(st_writer_add(w, "other", ST_F32, 1, (const int64_t[]){ INT64_MAX / 2 }, f32) == -E2BIG);

        CHECK(st_writer_save(w, path, err, sizeof err) == 0);
        /* saving again replaces the file atomically and leaves no temporary */
        CHECK(st_writer_save(w, path, err, sizeof err) == 0);
        CHECK(count_entries(tmpdir) == 1);
        CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);
        w = st_writer_free(w);
        CHECK(w == NULL && st_writer_free(NULL) == NULL);

        /* layout: header length a multiple of 8, padded with spaces, data back to back */
        struct buf b = read_file(path);
        REQUIRE(b.len > 8);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
                hlen = hlen << 8 | b.p[i];
        CHECK(hlen % 8 == 0 && 8 + hlen + 24 + 10 + 8 + 4 + 0 + 20 == b.len);
        CHECK(b.p[8] == '{');
        {
                size_t end = 8 + (size_t)hlen;

                while (end > 8 && b.p[end - 1] == ' ')
                        end--;
                CHECK(end > 8 && b.p[end - 1] == '}' && 8 + hlen - end < 8);
                CHECK(memchr(b.p + 8, '\n', (size_t)hlen) == NULL);
        }
        free(b.p);

        REQUIRE(st_open(path, err, sizeof err, &f) == 0);
        CHECK(st_count(f) == 6);
        const char *order[] = { "layer.f32", "layer.f16", "a.bf16", "scalar", "empty", "\xc3\xa9t\xc3\xa9" };
        for (size_t i = 0; i < 6; i++)
                CHECK(strcmp(st_at(f, i)->name, order[i]) == 0 && st_find(f, order[i]) == st_at(f, i));
        /* the data area is 8-byte aligned in the mapping */
        CHECK(((uintptr_t)st_at(f, 0)->data & 7) == 0);

        const struct st_tensor *t = st_find(f, "layer.f32");
        CHECK(t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6 &&
              t->nbytes == 24);
        st_to_f32(t->dtype, t->data, 6, out);
        for (int i = 0; i < 6; i++)
                CHECK(bits(out[i]) == bits(f32[i]));

        t = st_find(f, "layer.f16");
        CHECK(t->dtype == ST_F16 && strcmp(t->dtype_name, "F16") == 0 && t->ndim == 1 && t->numel == 5 &&
              t->nbytes == 10);
        st_to_f32(t->dtype, t->data, 5, out);
        for (int i = 0; i < 5; i++)
                CHECK(bits(out[i]) == bits(f16[i]));

        t = st_find(f, "a.bf16");
        CHECK(t->dtype == ST_BF16 && strcmp(t->dtype_name, "BF16") == 0 && t->numel == 4 && t->nbytes == 8);
        st_to_f32(t->dtype, t->data, 4, out);
        for (int i = 0; i < 4; i++)
                CHECK(bits(out[i]) == bits(bf16[i]));

        t = st_find(f, "scalar");
        CHECK(t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
        st_to_f32(t->dtype, t->data, 1, out);
        CHECK(out[0] == 42.0f);

        t = st_find(f, "empty");
        CHECK(t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4 && t->numel == 0 && t->nbytes == 0);
        f = st_free(f);

        /* an empty writer still writes a valid file */
        REQUIRE(st_writer_new(&w) == 0);
        CHECK(st_writer_save(w, path, err, sizeof err) == 0);
        w = st_writer_free(w);
        CHECK(st_open(path, err, sizeof err, &f) == 0 && st_count(f) == 0);
        f = st_free(f);

        /* a directory that does not exist: error names the path, no debris */
        {
                char bad[160];

                REQUIRE(st_writer_new(&w) == 0);
                snprintf(bad, sizeof bad, "%s/missing/x.safetensors", tmpdir);
                err[0] = '\0';
                CHECK(st_writer_save(w, bad, err, sizeof err) == -ENOENT);
                CHECK(strstr(err, bad) != NULL);
                w = st_writer_free(w);
        }
        unlink(path);
        CHECK(count_entries(tmpdir) == 0);
}

/* Every proper prefix of a valid file fails cleanly; the whole file parses.
 * Then every header byte is replaced in turn by a few hostile values: any
 * outcome is fine as long as nothing crashes and failures say why. */
static void test_prefixes_and_mutations(void)
{
        char path[128], err[256];
        struct st_writer *w = NULL;
        float v[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
        const int64_t s34[] = { 3, 4 }, s6[] = { 6 }, s2[] = { 2 };

        snprintf(path, sizeof path, "%s/small.safetensors", tmpdir);
        REQUIRE(st_writer_new(&w) == 0);
        REQUIRE(st_writer_add(w, "conv_stem.weight", ST_F32, 2, s34, v) == 0);
        REQUIRE(st_writer_add(w, "bn1.bias", ST_F16, 1, s6, v) == 0);
        REQUIRE(st_writer_add(w, "bn1.weight", ST_BF16, 1, s2, v) == 0);
        REQUIRE(st_writer_save(w, path, err, sizeof err) == 0);
        w = st_writer_free(w);
        struct buf whole = read_file(path);
        unlink(path);

        for (size_t len = 0; len <= whole.len; len++) {
                struct buf b = { malloc(len ? len : 1), len };
                struct st_file *f = UNTOUCHED;
                int r;

                REQUIRE(b.p);
                memcpy(b.p, whole.p, len);
                err[0] = '\0';
                r = st_parse(b.p, len, err, sizeof err, &f);
                if (len < whole.len) {
                        CHECK(r == -EBADMSG && f == UNTOUCHED && err[0]);
                } else {
                        CHECK(r == 0 && st_count(f) == 3);
                        st_free(f);
                }
                free(b.p);
        }

        const unsigned char bytes[] = { 0, ' ', '"', '{', '}', '[', ']', ',', ':', '-', '9', 0x80, 0xff };
        for (size_t i = 0; i < whole.len && i < 8 + 256; i++)
                for (size_t k = 0; k < sizeof bytes; k++) {
                        struct buf b = { malloc(whole.len), whole.len };
                        struct st_file *f = UNTOUCHED;
                        int r;

                        REQUIRE(b.p);
                        memcpy(b.p, whole.p, whole.len);
                        b.p[i] = bytes[k];
                        err[0] = '\0';
                        r = st_parse(b.p, b.len, err, sizeof err, &f);
                        if (r == 0) {
                                for (size_t j = 0; j < st_count(f); j++) {
                                        const struct st_tensor *t = st_at(f, j);

                                        CHECK((const unsigned char *)t->data >= b.p &&
                                              (const unsigned char *)t->data + t->nbytes <= b.p + b.len);
                                }
                                st_free(f);
                        } else {
                                CHECK((r == -EBADMSG || r == -E2BIG) && f == UNTOUCHED && err[0]);
                        }
                        free(b.p);
                }
        free(whole.p);
}

static void test_open_errors(void)
{
        char path[160], err[256];
        struct st_file *f = UNTOUCHED;
        FILE *fp;

        snprintf(path, sizeof path, "%s/absent.safetensors", tmpdir);
        err[0] = '\0';
        CHECK(st_open(path, err, sizeof err, &f) == -ENOENT && f == UNTOUCHED && strstr(err, path));

        err[0] = '\0';
        CHECK(st_open(tmpdir, err, sizeof err, &f) == -EISDIR && f == UNTOUCHED && strstr(err, tmpdir));

        snprintf(path, sizeof path, "%s/empty.safetensors", tmpdir);
        fp = fopen(path, "wb");
        REQUIRE(fp);
        fclose(fp);
        err[0] = '\0';
        CHECK(st_open(path, err, sizeof err, &f) == -EBADMSG && f == UNTOUCHED && strstr(err, path));

        /* file errors name both the file and the tensor */
        static const char h[] = "{" T("conv_stem.weight", "F32", "[24,3,3,3]", "[0,100]") "}";
        struct buf b = make(h, 64);
        fp = fopen(path, "wb");
        REQUIRE(fp && fwrite(b.p, 1, b.len, fp) == b.len);
        fclose(fp);
        free(b.p);
        err[0] = '\0';
        CHECK(st_open(path, err, sizeof err, &f) == -EBADMSG && f == UNTOUCHED);
        CHECK(strstr(err, path) == err &&
              strstr(err, "conv_stem.weight: data_offsets [0, 100] exceed data area of 64 bytes") != NULL);
        unlink(path);
}

int main(void)
{
        const char *base = getenv("TMPDIR");

        snprintf(tmpdir, sizeof tmpdir, "%s/test_safetensors.XXXXXX", base && *base && strlen(base) < 32 ? base : "/tmp");
        REQUIRE(mkdtemp(tmpdir));

        test_hostile_headers();
        test_header_length();
        test_too_many_tensors();
        test_valid_parse();
        test_f16_decode();
        test_bf16_decode();
        test_f32_and_other_decode();
        test_f16_encode();
        test_bf16_encode();
        test_round_trip();
        test_prefixes_and_mutations();
        test_open_errors();

        rmdir(tmpdir);
        if (CHECK_DONE())
                return 1;
        printf("test_safetensors: ok\n");
        return 0;
}

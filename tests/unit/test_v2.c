/* Unit test of the KServe v2 module (src/server/v2.c): base64, the
 * infer parser on valid and malformed requests (JSON and binary framing),
 * the memory it takes (jansson's allocations counted), the verdict on
 * non-finite logits, and the answer bodies. */
#include "v2.h"
#include "check.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE 2
#define CLASSES 5

static const int exec_batch[] = { 1, 2, 4 };
static struct v2_model model = { .name = "efficientnetv2-t", .size = SIZE, .classes = CLASSES, .max_batch = 4,
                                 .max_delay_us = 2000, .exec_batch = exec_batch, .n_exec = 3 };
static const struct v2_limits lim = { .max_images = 3, .max_image_bytes = 16 };

/* BYTES images point into the bodies: kept to the end. */
static uint8_t *bodies[128];
static int nbodies;

/* Parses body (a JSON text, then bin_len binary bytes when header >= 0). */
static int parse(const char *json, const void *bin, size_t bin_len, bool header, struct v2_request **r,
                 char *err)
{
        size_t jl = strlen(json);
        uint8_t *body = malloc(jl + bin_len + 1);
        REQUIRE(body);
        memcpy(body, json, jl);
        if (bin && bin_len)
                memcpy(body + jl, bin, bin_len);
        REQUIRE(nbodies < (int)(sizeof bodies / sizeof bodies[0]));
        bodies[nbodies++] = body;
        err[0] = '\0';
        return v2_parse_infer(body, jl + bin_len, header ? (int64_t)jl : -1, &model, &lim, err, 256, r);
}

/* A request that must fail with code and a message containing want. */
static void refuse(const char *json, const void *bin, size_t bin_len, bool header, int code, const char *want)
{
        struct v2_request *r = NULL;
        char err[256];
        int ret = parse(json, bin, bin_len, header, &r, err);
        CHECK_MSG(ret == code && !r && strstr(err, want), "%s -> %d '%s' (want %d '%s')", json, ret, err, code,
                  want);
        v2_request_free(r);
}

static const char *FP_JSON = "[0,1,2,3,4,5,6,7,8,9,10,11]";

/* jansson's allocations, counted as glibc holds them (a 16-byte aligned
 * chunk with an 8-byte header), so that the tree a parse builds is measured. */
static size_t json_live, json_peak;

static size_t chunk(size_t n)
{
        return (n + 8 + 15) / 16 * 16;
}

static void *counting_malloc(size_t n)
{
        size_t *p = malloc(n + 16);
        if (!p)
                return NULL;
        p[0] = n;
        json_live += chunk(n);
        if (json_live > json_peak)
                json_peak = json_live;
        return p + 2;
}

static void counting_free(void *ptr)
{
        if (!ptr)
                return;
        size_t *p = (size_t *)ptr - 2;
        json_live -= chunk(p[0]);
        free(p);
}

static void test_base64(void)
{
        uint8_t out[16];
        size_t n = 99;

        CHECK(v2_base64_decode("aGVsbG8=", 8, out, &n) == 0 && n == 5 && memcmp(out, "hello", 5) == 0);
        CHECK(v2_base64_decode("aGVsbG8", 7, out, &n) == 0 && n == 5);        /* padding left out */
        CHECK(v2_base64_decode("aGk=", 4, out, &n) == 0 && n == 2 && memcmp(out, "hi", 2) == 0);
        CHECK(v2_base64_decode("", 0, out, &n) == 0 && n == 0);
        n = 99;
        CHECK(v2_base64_decode("aGVsbG8*", 8, out, &n) == -EBADMSG && n == 99);
        CHECK(v2_base64_decode("a", 1, out, &n) == -EBADMSG);
        CHECK(v2_base64_decode("a===", 4, out, &n) == -EBADMSG);
        CHECK(v2_base64_decode("aG=k", 4, out, &n) == -EBADMSG);
        CHECK(v2_base64_decode("aGVsbG8 ", 8, out, &n) == -EBADMSG);
        CHECK(v2_base64_decode("aGl=", 4, out, &n) == -EBADMSG);              /* non-zero trailing bits */
}

static void test_valid(void)
{
        struct v2_request *r = NULL;
        char err[256], json[1024];
        float bin[24];

        snprintf(json, sizeof json,
                 "{\"id\":\"r1\",\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                 "\"data\":%s}]}", FP_JSON);
        CHECK(parse(json, NULL, 0, false, &r, err) == 0);
        CHECK(r && r->n == 1 && r->datatype == V2_FP32 && r->tensor && r->tensor[11] == 11.0f && !r->binary_output &&
              r->classification == 0 && r->id && strcmp(r->id, "r1") == 0);
        r = v2_request_free(r);

        /* Nested, with classification and binary output from the request. */
        CHECK(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                    "\"data\":[[[[0,1],[2,3]],[[4,5],[6,7]],[[8,9],[10,11.5]]]]}],"
                    "\"outputs\":[{\"name\":\"probabilities\",\"parameters\":{\"classification\":2}}],"
                    "\"parameters\":{\"binary_data_output\":true}}", NULL, 0, false, &r, err) == 0);
        CHECK(r && r->tensor[11] == 11.5f && r->classification == 2 && r->binary_output && !r->id);
        r = v2_request_free(r);

        /* Binary FP32; binary_data false on the output wins over binary_data_output. */
        for (int i = 0; i < 24; i++)
                bin[i] = (float)i / 4;
        CHECK(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[2,3,2,2],\"datatype\":\"FP32\","
                    "\"parameters\":{\"binary_data_size\":96}}],"
                    "\"outputs\":[{\"name\":\"probabilities\",\"parameters\":{\"binary_data\":false}}],"
                    "\"parameters\":{\"binary_data_output\":true}}", bin, sizeof bin, true, &r, err) == 0);
        CHECK(r && r->n == 2 && r->tensor[23] == 23.0f / 4 && !r->binary_output);
        r = v2_request_free(r);

        /* Binary BYTES: length-prefixed elements, into the body. */
        uint8_t bb[] = { 3, 0, 0, 0, 'a', 'b', 'c', 1, 0, 0, 0, 'z' };
        CHECK(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[2],\"datatype\":\"BYTES\","
                    "\"parameters\":{\"binary_data_size\":12}}]}", bb, sizeof bb, true, &r, err) == 0);
        CHECK(r && r->n == 2 && r->datatype == V2_BYTES && r->images[0].len == 3 &&
              memcmp(r->images[0].data, "abc", 3) == 0 && r->images[1].len == 1 && r->images[1].data[0] == 'z');
        r = v2_request_free(r);
        /* Without binary_data_size: the rest of the body. */
        CHECK(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[2],\"datatype\":\"BYTES\"}]}", bb, sizeof bb, true,
                    &r, err) == 0 && r && r->n == 2);
        r = v2_request_free(r);

        /* JSON BYTES: base64. */
        CHECK(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[2],\"datatype\":\"BYTES\","
                    "\"data\":[\"aGVsbG8=\",\"aGk\"]}]}", NULL, 0, false, &r, err) == 0);
        CHECK(r && r->images[0].len == 5 && memcmp(r->images[0].data, "hello", 5) == 0 && r->images[1].len == 2);
        r = v2_request_free(r);
        /* Exactly the limit of 16 bytes, padded: 24 characters, 18 bytes by length alone. */
        CHECK(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\","
                    "\"data\":[\"aGVsbG8gd29ybGQgaGVsbA==\"]}]}", NULL, 0, false, &r, err) == 0);
        CHECK(r && r->images[0].len == 16);
        r = v2_request_free(r);
}

static void test_malformed(void)
{
        char json[1024];
        float bin[24] = { 0 };
        uint8_t bb[] = { 3, 0, 0, 0, 'a', 'b', 'c' };

        refuse("", NULL, 0, false, -EBADMSG, "empty");
        refuse("{\"inputs\":[", NULL, 0, false, -EBADMSG, "malformed");
        refuse("[1,2]", NULL, 0, false, -EBADMSG, "JSON object");
        refuse("{\"inputs\":[],\"inputs\":[]}", NULL, 0, false, -EBADMSG, "malformed");   /* duplicate key */
        refuse("{}", NULL, 0, false, -EBADMSG, "one input");
        refuse("{\"inputs\":[{}, {}]}", NULL, 0, false, -EBADMSG, "one input");
        refuse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"\"]}]}", NULL, 0, false,
               -EBADMSG, "unexpected inference input 'x'");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":7}]}", NULL, 0, false, -EBADMSG,
               "'datatype'");
        refuse("{\"id\":5,\"inputs\":[]}", NULL, 0, false, -EBADMSG, "'id'");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"INT8\",\"data\":[]}]}", NULL, 0,
               false, -EBADMSG, "datatype INT8");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,4,4],\"datatype\":\"FP32\",\"data\":[]}]}", NULL, 0,
               false, -EBADMSG, "does not match");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2],\"datatype\":\"FP32\",\"data\":[]}]}", NULL, 0,
               false, -EBADMSG, "does not match");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,-3,2,2],\"datatype\":\"FP32\",\"data\":[]}]}", NULL, 0,
               false, -EBADMSG, "'shape'");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":\"1\",\"datatype\":\"FP32\",\"data\":[]}]}", NULL, 0,
               false, -EBADMSG, "'shape'");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[0,3,2,2],\"datatype\":\"FP32\",\"data\":[]}]}", NULL, 0,
               false, -EBADMSG, "no images");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[4,3,2,2],\"datatype\":\"FP32\",\"data\":[]}]}", NULL, 0,
               false, -E2BIG, "limit is 3");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[2147483647,3,2,2],\"datatype\":\"FP32\",\"data\":[]}]}",
               NULL, 0, false, -E2BIG, "limit is 3");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\",\"data\":[1,2]}]}", NULL, 0,
               false, -EBADMSG, "2 values");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
               "\"data\":[0,1,2,3,4,5,6,7,8,9,10,\"11\"]}]}", NULL, 0, false, -EBADMSG, "must be numbers");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
               "\"data\":[[[[[0,1,2,3,4,5,6,7,8,9,10,11]]]]]}]}", NULL, 0, false, -EBADMSG, "must be numbers");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
               "\"data\":[0,1,2,3,4,5,6,7,8,9,10,1e39]}]}", NULL, 0, false, -EBADMSG, "FP32 range");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\",\"data\":5}]}", NULL, 0,
               false, -EBADMSG, "must be an array");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\"}]}", NULL, 0, false,
               -EBADMSG, "no 'data'");
        snprintf(json, sizeof json, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                 "\"data\":%s}],\"outputs\":[{\"name\":\"logits\"}]}", FP_JSON);
        refuse(json, NULL, 0, false, -EBADMSG, "unexpected inference output 'logits'");
        snprintf(json, sizeof json, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                 "\"data\":%s}],\"outputs\":[{\"name\":\"probabilities\",\"parameters\":{\"classification\":6}}]}",
                 FP_JSON);
        refuse(json, NULL, 0, false, -EBADMSG, "'classification'");
        snprintf(json, sizeof json, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                 "\"data\":%s}],\"outputs\":[{\"name\":\"probabilities\",\"parameters\":{\"binary_data\":1}}]}",
                 FP_JSON);
        refuse(json, NULL, 0, false, -EBADMSG, "'binary_data'");
        snprintf(json, sizeof json, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                 "\"data\":%s}],\"parameters\":{\"binary_data_output\":\"yes\"}}", FP_JSON);
        refuse(json, NULL, 0, false, -EBADMSG, "'binary_data_output'");
        snprintf(json, sizeof json, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                 "\"data\":%s}],\"outputs\":[{\"name\":\"probabilities\"},{\"name\":\"probabilities\"}]}", FP_JSON);
        refuse(json, NULL, 0, false, -EBADMSG, "one output");

        /* Binary framing. */
        const char *fp_bin = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                             "\"parameters\":{\"binary_data_size\":48}}]}";
        refuse(fp_bin, bin, 47, true, -EBADMSG, "truncated");
        refuse(fp_bin, bin, 49, true, -EBADMSG, "1 bytes after");
        refuse(fp_bin, bin, 48, false, -EBADMSG, "malformed");        /* binary bytes parsed as JSON */
        refuse(fp_bin, NULL, 0, false, -EBADMSG, "no Inference-Header-Content-Length");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
               "\"parameters\":{\"binary_data_size\":40}}]}", bin, 40, true, -EBADMSG, "needs 48");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
               "\"parameters\":{\"binary_data_size\":-1}}]}", bin, 48, true, -EBADMSG, "non-negative");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\",\"data\":[],"
               "\"parameters\":{\"binary_data_size\":48}}]}", bin, 48, true, -EBADMSG, "both");
        snprintf(json, sizeof json, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                 "\"data\":%s}]}", FP_JSON);
        refuse(json, bin, 4, true, -EBADMSG, "no input has binary_data_size");
        float nan_bin[12] = { 0 };
        nan_bin[5] = NAN;
        refuse(fp_bin, nan_bin, sizeof nan_bin, true, -EBADMSG, "element 5 is not a finite number");
        nan_bin[5] = INFINITY;
        refuse(fp_bin, nan_bin, sizeof nan_bin, true, -EBADMSG, "not a finite number");
        struct v2_request *r = NULL;
        char err[256];
        CHECK(v2_parse_infer((const uint8_t *)"{}", 2, 3, &model, &lim, err, sizeof err, &r) == -EBADMSG &&
              strstr(err, "Inference-Header-Content-Length 3"));

        /* BYTES. */
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1],\"datatype\":\"BYTES\",\"data\":[]}]}", NULL, 0,
               false, -EBADMSG, "must be [N]");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[2],\"datatype\":\"BYTES\",\"data\":[\"aGk=\"]}]}", NULL,
               0, false, -EBADMSG, "1 elements");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"a*b=\"]}]}", NULL,
               0, false, -EBADMSG, "not base64");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[5]}]}", NULL, 0,
               false, -EBADMSG, "base64 strings");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\","
               "\"data\":[\"aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=\"]}]}", NULL, 0, false, -E2BIG, "over the limit");
        /* 17 bytes unpadded: 23 characters, whose last group of 3 carries 2 bytes. */
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\","
               "\"data\":[\"aGVsbG8gd29ybGQgaGVsbG8\"]}]}", NULL, 0, false, -E2BIG, "over the limit");
        const char *bytes_bin = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\","
                                "\"parameters\":{\"binary_data_size\":7}}]}";
        refuse(bytes_bin, bb, 6, true, -EBADMSG, "truncated");
        uint8_t bad_len[] = { 9, 0, 0, 0, 'a', 'b', 'c' };
        refuse(bytes_bin, bad_len, 7, true, -EBADMSG, "runs past the end");
        uint8_t huge_len[] = { 0xff, 0xff, 0xff, 0xff, 'a', 'b', 'c' };
        refuse(bytes_bin, huge_len, 7, true, -E2BIG, "limit is 16");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[2],\"datatype\":\"BYTES\","
               "\"parameters\":{\"binary_data_size\":7}}]}", bb, 7, true, -EBADMSG, "element 2 of 2");
        uint8_t extra[] = { 1, 0, 0, 0, 'a', 'b', 'c' };
        refuse(bytes_bin, extra, 7, true, -EBADMSG, "2 bytes after its 1 elements");
}

/* A request of the model's one FP32 input whose data is text. */
static char *fp32_request(const char *data)
{
        const char *fmt = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                          "\"data\":%s}]}";
        size_t n = strlen(fmt) + strlen(data) + 1;
        char *s = malloc(n);
        REQUIRE(s);
        snprintf(s, n, fmt, data);
        return s;
}

/* The JSON text forms the scanner reads: exact numbers, nesting, escapes,
 * whitespace; and what it refuses, with where. */
static void test_text(void)
{
        struct v2_request *r = NULL;
        char err[256], *json;

        /* strtof: the nearest float of each decimal, whatever its form. */
        json = fp32_request(" [ 0.1 , -0 ,1E+2, 1e-50,3.4028235e38, -3.4028235e38, 123456789012345678901234567890,"
                            "\n\t0.30000001192092896, 16777217, 1.17549435e-38, 2.5e-45, 7 ] ");
        CHECK_MSG(parse(json, NULL, 0, false, &r, err) == 0, "%s", err);
        CHECK(r && r->tensor[0] == 0.1f && r->tensor[1] == 0.0f && signbit(r->tensor[1]) && r->tensor[2] == 100.0f &&
              r->tensor[3] == 0.0f && r->tensor[4] == FLT_MAX && r->tensor[5] == -FLT_MAX &&
              r->tensor[6] == 1.2345679e29f && r->tensor[7] == 0.3f && r->tensor[8] == 16777216.0f &&
              r->tensor[9] == FLT_MIN && r->tensor[10] == strtof("2.5e-45", NULL) && r->tensor[11] == 7.0f);
        CHECK(r && r->range && r->range[0] == -FLT_MAX && r->range[1] == FLT_MAX);
        r = v2_request_free(r);
        free(json);

        /* Nested as the shape, nested unevenly, and with empty arrays: the
         * values count, in row-major order. */
        const char *forms[] = { "[[[[0,1],[2,3]],[[4,5],[6,7]],[[8,9],[10,11]]]]", "[[0,1,2,3],[4,5,6,7],[8,9,10,11]]",
                                "[0,[1,[2,[3]]],[],4,5,6,7,8,9,10,[[11]]]" };
        for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
                json = fp32_request(forms[i]);
                CHECK_MSG(parse(json, NULL, 0, false, &r, err) == 0, "%s: %s", forms[i], err);
                for (int k = 0; r && k < 12; k++)
                        CHECK_MSG(r->tensor[k] == (float)k, "%s: element %d is %g", forms[i], k, (double)r->tensor[k]);
                r = v2_request_free(r);
                free(json);
        }

        /* Keys are compared unescaped, as jansson reads them. */
        CHECK(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],\"datatype\":\"FP32\","
                    "\"d\\u0061ta\":[0,1,2,3,4,5,6,7,8,9,10,11]}]}", NULL, 0, false, &r, err) == 0);
        CHECK(r && r->tensor[11] == 11.0f);
        r = v2_request_free(r);
        /* Base64 with JSON's escapes ("\/" as some encoders write '/'). */
        CHECK(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[2],\"datatype\":\"BYTES\","
                    "\"data\":[\"P\\/8=\", \"aGk\\u003d\"]}]}", NULL, 0, false, &r, err) == 0);
        CHECK(r && r->images[0].len == 2 && r->images[0].data[0] == 0x3f && r->images[0].data[1] == 0xff &&
              r->images[1].len == 2 && memcmp(r->images[1].data, "hi", 2) == 0);
        r = v2_request_free(r);
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\","
               "\"data\":[\"aGk\\u00e9\"]}]}", NULL, 0, false, -EBADMSG, "not base64");
        refuse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\","
               "\"data\":[[\"aGk=\"]]}]}", NULL, 0, false, -EBADMSG, "flat array");

        /* Malformed text, wherever it is, with the byte where it went wrong. */
        const struct { const char *data, *want; } broken[] = {
                { "[0,1,2,3,4,5,6,7,8,9,10,11,]", "malformed at byte" }, { "[01,1,2,3,4,5,6,7,8,9,10,11]", "malformed" },
                { "[NaN,1,2,3,4,5,6,7,8,9,10,11]", "malformed" }, { "[1.,1,2,3,4,5,6,7,8,9,10,11]", "malformed" },
                { "[.5,1,2,3,4,5,6,7,8,9,10,11]", "malformed" }, { "[+1,1,2,3,4,5,6,7,8,9,10,11]", "malformed" },
                { "[1e,1,2,3,4,5,6,7,8,9,10,11]", "malformed" }, { "[\"a\tb\"]", "malformed" },
                { "[\"\\x\"]", "malformed" }, { "[\"\\u12g4\"]", "malformed" }, { "[1,2}", "malformed" },
                { "[tru]", "malformed" }, { "[0 1]", "malformed" },
        };
        for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
                json = fp32_request(broken[i].data);
                refuse(json, NULL, 0, false, -EBADMSG, broken[i].want);
                free(json);
        }
        refuse("{\"inputs\":[]} x", NULL, 0, false, -EBADMSG, "malformed at byte 14");
        refuse("{\"inputs\":[{\"data\":[1,", NULL, 0, false, -EBADMSG, "at byte 22: it ends early");
        /* jansson's findings in the head are placed in the text, past the
         * cut data: after the second "inputs" key. */
        json = fp32_request("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]");
        size_t jl = strlen(json);
        char *dup = malloc(jl + 32);
        REQUIRE(dup);
        memcpy(dup, json, jl - 1);
        strcpy(dup + jl - 1, ",\"inputs\":[]}");
        char want[64];
        snprintf(want, sizeof want, "malformed at byte %zu", jl + 8);
        refuse(dup, NULL, 0, false, -EBADMSG, want);
        free(dup);
        free(json);

        /* Values that are no FP32, and data nested past the shape. */
        json = fp32_request("[0,1,2,3,4,5,6,7,8,9,10,3.5e38]");
        refuse(json, NULL, 0, false, -EBADMSG, "FP32 range");
        free(json);
        json = fp32_request("[0,1,2,3,4,5,6,7,8,9,10,true]");
        refuse(json, NULL, 0, false, -EBADMSG, "must be numbers");
        free(json);
        json = fp32_request("[0,1,2,3,4,5,6,7,8,9,10,{}]");
        refuse(json, NULL, 0, false, -EBADMSG, "must be numbers");
        free(json);
        json = fp32_request("[0,1,2,3,4,5,6,7,8,9,10,11,12]");
        refuse(json, NULL, 0, false, -EBADMSG, "13 values");
        free(json);

        /* Nesting: 32 levels are read (the root, parameters, 30 arrays), 33
         * are not, in the head or the data. */
        char deep[256] = "{\"inputs\":[],\"parameters\":{\"x\":";
        size_t l = strlen(deep);
        for (int i = 0; i < 30; i++)
                deep[l++] = '[';
        for (int i = 0; i < 30; i++)
                deep[l++] = ']';
        strcpy(deep + l, "}}");
        refuse(deep, NULL, 0, false, -EBADMSG, "one input");
        memmove(deep + 36, deep + 35, strlen(deep + 35) + 1);
        deep[35] = '[';
        memmove(deep + 36 + 31, deep + 35 + 31, strlen(deep + 35 + 31) + 1);
        deep[36 + 30] = ']';
        refuse(deep, NULL, 0, false, -EBADMSG, "more than 32 levels deep");
        char nest[256];
        for (l = 0; l < 40; l++)
                nest[l] = '[';
        for (; l < 80; l++)
                nest[l] = ']';
        nest[l] = '\0';
        json = fp32_request(nest);
        refuse(json, NULL, 0, false, -EBADMSG, "more than 32 levels deep");
        free(json);

        /* The JSON apart from the data is capped; the data is not. */
        size_t big = V2_MAX_HEAD + 100;
        char *pad = malloc(big + 256);
        REQUIRE(pad);
        l = (size_t)sprintf(pad, "{\"parameters\":{\"p\":\"");
        memset(pad + l, 'x', big);
        strcpy(pad + l + big, "\"},\"inputs\":[]}");
        refuse(pad, NULL, 0, false, -E2BIG, "apart from its input's data");
        free(pad);
}

/* Parses body (len bytes) with jansson's allocations counted: its peak. */
static int parse_counted(const char *body, size_t len, size_t *ret_peak, char *err)
{
        struct v2_request *r = NULL;

        json_live = json_peak = 0;
        int ret = v2_parse_infer((const uint8_t *)body, len, -1, &model, &lim, err, 256, &r);
        *ret_peak = json_peak;
        CHECK_MSG(json_live == 0, "jansson holds %zu bytes after the parse", json_live);
        v2_request_free(r);
        return ret;
}

/* The memory of a parse does not grow with the text: 1 MiB of the shapes
 * that cost jansson the most per byte (measured: 78 bytes for "{},", 46
 * for "[],", 22 for "0,"), as the data or elsewhere, takes no more than
 * the head's bound. */
static void test_memory(void)
{
        const char *shapes[] = { "[],", "{},", "0,", "[[]],", "\"\"," };
        const size_t len = (size_t)1 << 20;
        char *body = malloc(len + 256), err[256];
        size_t peak;
        REQUIRE(body);

        /* Only here: the bodies and answers of other tests are jansson's
         * strings, which they free with free(). */
        json_set_alloc_funcs(counting_malloc, counting_free);
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
                size_t sl = strlen(shapes[k]);
                /* As the input's data. */
                size_t l = (size_t)sprintf(body, "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],"
                                                 "\"datatype\":\"FP32\",\"data\":[");
                while (l + sl + 8 < len) {
                        memcpy(body + l, shapes[k], sl);
                        l += sl;
                }
                l += (size_t)sprintf(body + l - 1, "]}]}") - 1;
                int r = parse_counted(body, l, &peak, err);
                CHECK_MSG(r == -EBADMSG, "data of %s: %d %s", shapes[k], r, err);
                CHECK_MSG(peak <= v2_head_bytes(l) && peak < 64 << 10,
                          "data of %zu bytes of %s: jansson's peak %zu bytes", l, shapes[k], peak);
                /* Anywhere else: refused at the head's cap. */
                l = (size_t)sprintf(body, "{\"inputs\":[],\"parameters\":{\"x\":[");
                while (l + sl + 8 < len) {
                        memcpy(body + l, shapes[k], sl);
                        l += sl;
                }
                l += (size_t)sprintf(body + l - 1, "]}}") - 1;
                r = parse_counted(body, l, &peak, err);
                CHECK_MSG(r == -E2BIG, "parameters of %s: %d %s", shapes[k], r, err);
                CHECK_MSG(peak == 0, "parameters of %s: jansson's peak %zu bytes", shapes[k], peak);
                /* Just under the cap: jansson parses it, within the bound. */
                l = (size_t)sprintf(body, "{\"inputs\":[],\"parameters\":{\"x\":[");
                while (l + sl + 8 < V2_MAX_HEAD) {
                        memcpy(body + l, shapes[k], sl);
                        l += sl;
                }
                l += (size_t)sprintf(body + l - 1, "]}}") - 1;
                r = parse_counted(body, l, &peak, err);
                CHECK_MSG(r == -EBADMSG && strstr(err, "one input"), "a full head of %s: %d %s", shapes[k], r, err);
                CHECK_MSG(peak > 0 && peak + l <= v2_head_bytes(l), "a head of %zu bytes of %s: jansson's peak %zu, "
                          "over the bound of %zu", l, shapes[k], peak, v2_head_bytes(l));
        }
        free(body);
        json_set_alloc_funcs(malloc, free);

        /* What the data step allocates is what it said it would, at most. */
        struct v2_request *r = NULL;
        char *json = fp32_request(FP_JSON);
        REQUIRE(v2_parse_head((const uint8_t *)json, strlen(json), -1, &model, &lim, err, sizeof err, &r) == 0);
        CHECK(r && !r->tensor && r->n == 1);
        CHECK_EQ(v2_request_data_bytes(r, &model, &lim), sizeof(float) * (12 + 2));
        CHECK(v2_parse_data(r, (const uint8_t *)json, strlen(json), &model, &lim, err, sizeof err) == 0 &&
              r->tensor[11] == 11.0f);
        v2_request_free(r);
        free(json);
}

/* NaN or Inf logits: the client's when its values went past what an image
 * holds, the weights' otherwise. */
static void test_check_logits(void)
{
        struct v2_request *r = NULL;
        char err[256];
        float logits[CLASSES] = { 1, 2, 3, 4, 5 };
        char *json = fp32_request("[0,1,2,3,4,5,6,7,8,9,10,-255]");

        REQUIRE(parse(json, NULL, 0, false, &r, err) == 0);
        free(json);
        CHECK_EQ(v2_check_logits(&model, r, logits, err, sizeof err), 0);
        logits[3] = INFINITY;
        CHECK_EQ(v2_check_logits(&model, r, logits, err, sizeof err), -EDOM);
        r = v2_request_free(r);
        json = fp32_request("[0,1,2,3,4,5,6,7,8,9,10,3.0e38]");
        REQUIRE(parse(json, NULL, 0, false, &r, err) == 0);
        free(json);
        err[0] = '\0';
        CHECK_EQ(v2_check_logits(&model, r, logits, err, sizeof err), -ERANGE);
        CHECK_CONTAINS(err, "image 1 holds values from 0 to 3e+38");
        logits[3] = NAN;
        CHECK_EQ(v2_check_logits(&model, r, logits, err, sizeof err), -ERANGE);
        logits[3] = 4;
        CHECK_EQ(v2_check_logits(&model, r, logits, err, sizeof err), 0);
        r = v2_request_free(r);
        /* BYTES: our own preprocessing made the tensor. */
        REQUIRE(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"BYTES\","
                      "\"data\":[\"aGk=\"]}]}", NULL, 0, false, &r, err) == 0);
        logits[0] = NAN;
        CHECK_EQ(v2_check_logits(&model, r, logits, err, sizeof err), -EDOM);
        v2_request_free(r);
}

static void test_bodies(struct api_labels *labels)
{
        struct v2_request *r = NULL;
        char err[256], json[1024], *body = NULL;
        size_t len = 0, hlen = 0;
        json_t *j;

        model.labels = labels;
        CHECK(v2_error_body("bad \"thing\"", &body) == 0 && strcmp(body, "{\"error\":\"bad \\\"thing\\\"\"}") == 0);
        free(body);
        CHECK(v2_server_body(&body) == 0 && strstr(body, "\"binary_tensor_data\"") && strstr(body, "\"classification\"")
              && strstr(body, "\"model_configuration\""));
        free(body);
        CHECK(v2_model_body(&model, NULL, 0, &body) == 0 && strstr(body, "\"shape\":[-1,3,2,2]") &&
              strstr(body, "\"shape\":[-1,5]") && strstr(body, "\"versions\":[\"1\"]"));
        free(body);
        {
                const int64_t versions[] = { 12, 3, 1 };
                CHECK(v2_model_body(&model, versions, 3, &body) == 0 &&
                      strstr(body, "\"versions\":[\"12\",\"3\",\"1\"]"));
                free(body);
        }
        CHECK(v2_config_body(&model, &body) == 0 && strstr(body, "\"max_batch_size\":4") &&
              strstr(body, "\"dims\":[3,2,2]") && strstr(body, "\"format\":\"FORMAT_NCHW\"") &&
              strstr(body, "\"max_queue_delay_microseconds\":2000"));
        CHECK(body && !strstr(body, "weights_source"));
        free(body);
        /* Seeded weights are called untrained there too. */
        struct api_weights w = { .source = API_WEIGHTS_SEEDED, .path = "/w", .sha256 = "ab12", .seed = 3 };
        model.weights = &w;
        CHECK(v2_config_body(&model, &body) == 0 &&
              strstr(body, "\"weights_source\":{\"string_value\":\"seeded\"}") &&
              strstr(body, "\"weights_trained\":{\"string_value\":\"false\"}") &&
              strstr(body, "\"weights_sha256\":{\"string_value\":\"ab12\"}") &&
              strstr(body, "\"labels_source\":{\"string_value\":\""));
        free(body);
        model.weights = NULL;

        float logits[2 * CLASSES] = { 0, 1, 2, 3, 4, 4, 3, 2, 1, 0 };
        snprintf(json, sizeof json, "{\"id\":\"x7\",\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,2,2],"
                 "\"datatype\":\"FP32\",\"data\":%s}],\"outputs\":[{\"name\":\"probabilities\","
                 "\"parameters\":{\"classification\":2}}]}", FP_JSON);
        REQUIRE(parse(json, NULL, 0, false, &r, err) == 0);
        r->n = 2;   /* two images' logits */
        CHECK(v2_infer_body(&model, r, logits, &body, &len, &hlen) == 0 && len == hlen && strlen(body) == len);
        j = json_loads(body, 0, NULL);
        json_t *out = json_array_get(json_object_get(j, "outputs"), 0);
        json_t *data = json_object_get(out, "data");
        CHECK(strcmp(json_string_value(json_object_get(j, "id")), "x7") == 0);
        CHECK(strcmp(json_string_value(json_object_get(out, "datatype")), "BYTES") == 0);
        CHECK(json_array_size(data) == 4 && strcmp(json_string_value(json_array_get(data, 0)), "0.636409:4:e") == 0 &&
              strcmp(json_string_value(json_array_get(data, 2)), "0.636409:0:a") == 0);
        json_decref(j);
        free(body);

        /* Binary probabilities. */
        float lg[2 * CLASSES] = { 0, 1, 2, 3, 4, 4, 3, 2, 1, 0 };
        r->classification = 0;
        r->binary_output = true;
        CHECK(v2_infer_body(&model, r, lg, &body, &len, &hlen) == 0 && len == hlen + sizeof lg);
        float p[2 * CLASSES];
        memcpy(p, body + hlen, sizeof p);
        CHECK(fabsf(p[4] - 0.636409f) < 1e-5f && fabsf(p[0] + p[1] + p[2] + p[3] + p[4] - 1) < 1e-5f);
        CHECK(strstr(body, "\"binary_data_size\":40") && memchr(body, '\0', hlen) == NULL);
        free(body);
        v2_request_free(r);
}

int main(void)
{
        struct api_labels *labels = NULL;
        char err[256];

        test_base64();
        test_valid();
        test_malformed();
        test_text();
        test_memory();
        test_check_logits();
        FILE *f = fopen("test_v2_labels.txt", "w");
        REQUIRE(f);
        fputs("a\nb\nc\nd\ne\n", f);
        fclose(f);
        REQUIRE(api_labels_load("test_v2_labels.txt", CLASSES, err, sizeof err, &labels) == 0);
        remove("test_v2_labels.txt");
        test_bodies(labels);
        api_labels_free(labels);
        for (int i = 0; i < nbodies; i++)
                free(bodies[i]);
        return CHECK_DONE();
}

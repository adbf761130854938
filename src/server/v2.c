/* v2: the KServe v2 / Open Inference Protocol: infer parser, bodies. */
#include "v2.h"
#include "util.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The version of m as text, for the bodies. */
static const char *version_text(const struct v2_model *m, char buf[24])
{
        snprintf(buf, 24, "%lld", (long long)(m->version > 0 ? m->version : 1));
        return buf;
}

/* ---- base64 ------------------------------------------------------------------ */

static int b64_value(unsigned char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int v2_base64_decode(const char *in, size_t len, uint8_t *out, size_t *ret_len)
{
        size_t o = 0, i = 0;

        /* Padding only at the very end, and only to complete a group. */
        size_t pad = 0;
        while (pad < 2 && len > 0 && in[len - 1] == '=')
                len--, pad++;
        if (pad && (len + pad) % 4 != 0)
                return -EBADMSG;
        if (len % 4 == 1)
                return -EBADMSG;
        while (i < len) {
                uint32_t acc = 0;
                size_t k = len - i < 4 ? len - i : 4;
                for (size_t j = 0; j < 4; j++) {
                        int v = j < k ? b64_value((unsigned char)in[i + j]) : 0;
                        if (v < 0)
                                return -EBADMSG;
                        acc = acc << 6 | (uint32_t)v;
                }
                out[o++] = (uint8_t)(acc >> 16);
                if (k > 2)
                        out[o++] = (uint8_t)(acc >> 8);
                if (k > 3)
                        out[o++] = (uint8_t)acc;
                /* Bits beyond the last byte must be zero (canonical encoding). */
                if ((k == 2 && (acc & 0xffff)) || (k == 3 && (acc & 0xff)))
                        return -EBADMSG;
                i += k;
        }
        *ret_len = o;
        return 0;
}

/* ---- infer requests ------------------------------------------------------------ */

struct v2_request *v2_request_free(struct v2_request *r)
{
        if (!r)
                return NULL;
        free(r->id);
        free(r->tensor);
        free(r->images);
        free(r->decoded);
        free(r->range);
        free(r);
        return NULL;
}

static int bad(char *err, size_t err_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t err_len, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        if (err && err_len)
                vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

/* "[1,3,224,224]" for messages. */
static void shape_str(const int64_t *dims, size_t rank, char *buf, size_t n)
{
        size_t used = (size_t)snprintf(buf, n, "[");
        for (size_t i = 0; i < rank && used < n; i++)
                used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)dims[i]);
        if (used < n)
                snprintf(buf + used, n - used, "]");
}

static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- JSON text, read without a tree ----------------------------------------------
 *
 * A scanner of RFC 8259 that allocates nothing: scan_value checks one value
 * and finds its end, the head copies the request without its data arrays
 * for jansson, and the data readers below walk an array that scan_value
 * has checked already, so that they need not check its syntax again. Its
 * own code rather than a streaming library (yajl): the request is small
 * apart from one array, both steps need only this much, and a scanner of
 * a page can be fuzzed whole with the parser (tests/fuzz/fuzz_v2.c). */

static bool is_ws(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *skip_ws(const char *p, const char *end)
{
        while (p < end && is_ws(*p))
                p++;
        return p;
}

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

/* The end of the JSON number at p, or NULL. */
static const char *scan_number(const char *p, const char *end)
{
        if (p < end && *p == '-')
                p++;
        if (p < end && *p == '0')
                p++;
        else if (p < end && *p >= '1' && *p <= '9')
                while (p < end && is_digit(*p))
                        p++;
        else
                return NULL;
        if (p < end && *p == '.') {
                if (++p >= end || !is_digit(*p))
                        return NULL;
                while (p < end && is_digit(*p))
                        p++;
        }
        if (p < end && (*p == 'e' || *p == 'E')) {
                if (++p < end && (*p == '+' || *p == '-'))
                        p++;
                if (p >= end || !is_digit(*p))
                        return NULL;
                while (p < end && is_digit(*p))
                        p++;
        }
        return p;
}

/* The end (past the closing quote) of the JSON string whose opening quote
 * is at p, or NULL: no raw control characters, only JSON's escapes. UTF-8
 * is left to jansson (the head) and to base64 (data strings). */
static const char *scan_string(const char *p, const char *end)
{
        for (p++; p < end; p++) {
                unsigned char c = (unsigned char)*p;
                if (c == '"')
                        return p + 1;
                if (c < 0x20)
                        return NULL;
                if (c != '\\')
                        continue;
                if (++p >= end)
                        return NULL;
                if (*p == 'u') {
                        for (int i = 0; i < 4; i++)
                                if (++p >= end || hex_value(*p) < 0)
                                        return NULL;
                } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
                        return NULL;
                }
        }
        return NULL;
}

/* The next byte of a checked JSON string's content at *pp, escapes
 * undone; -1 at its closing quote. A \u escape of a character beyond ASCII
 * gives 0x80, which neither a key we look for nor base64 holds. */
static int string_next(const char **pp)
{
        const char *p = *pp;
        int c = (unsigned char)*p++;

        if (c == '"')
                return -1;
        if (c == '\\') {
                c = *p++;
                switch (c) {
                case 'b': c = '\b'; break;
                case 'f': c = '\f'; break;
                case 'n': c = '\n'; break;
                case 'r': c = '\r'; break;
                case 't': c = '\t'; break;
                case 'u': {
                        int v = 0;
                        for (int i = 0; i < 4; i++)
                                v = v << 4 | hex_value(*p++);
                        c = v < 0x80 ? v : 0x80;
                        break;
                }
                default: break; /* '"', '\\', '/' */
                }
        }
        *pp = p;
        return c;
}

/* Whether the checked JSON string at s (its opening quote) is name. */
static bool string_is(const char *s, const char *name)
{
        const char *p = s + 1;
        int c;

        while ((c = string_next(&p)) >= 0)
                if (*name == '\0' || c != (unsigned char)*name++)
                        return false;
        return *name == '\0';
}

/* Checks the JSON value at *pp (after any whitespace), nested at most
 * max_depth levels (0: a scalar), and moves *pp past it. -EBADMSG for a
 * syntax error, -ELOOP for nesting too deep, with *pp where it was found.
 * Iterative: a bit per level says object or array. */
static int scan_value(const char **pp, const char *end, int max_depth)
{
        const char *p = skip_ws(*pp, end);
        uint64_t objects = 0;   /* bit d: level d+1 is an object */
        int depth = 0, r = -EBADMSG;

        if (max_depth > 64)
                max_depth = 64;
value:
        if (p >= end)
                goto fail;
        if (*p == '{' || *p == '[') {
                if (depth >= max_depth) {
                        r = -ELOOP;
                        goto fail;
                }
                bool obj = *p == '{';
                objects = obj ? objects | (uint64_t)1 << depth : objects & ~((uint64_t)1 << depth);
                depth++;
                p = skip_ws(p + 1, end);
                if (p < end && *p == (obj ? '}' : ']')) {
                        p++;
                        depth--;
                        goto next;
                }
                if (obj)
                        goto key;
                goto value;
        }
        const char *q;
        if (*p == '"')
                q = scan_string(p, end);
        else if (*p == 't')
                q = end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
        else if (*p == 'f')
                q = end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
        else if (*p == 'n')
                q = end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
        else
                q = scan_number(p, end);
        if (!q)
                goto fail;
        p = q;
next:
        if (depth == 0) {
                *pp = p;
                return 0;
        }
        p = skip_ws(p, end);
        if (p >= end)
                goto fail;
        bool in_obj = objects >> (depth - 1) & 1;
        if (*p == ',') {
                p = skip_ws(p + 1, end);
                if (in_obj)
                        goto key;
                goto value;
        }
        if (*p != (in_obj ? '}' : ']'))
                goto fail;
        p++;
        depth--;
        goto next;
key:
        if (p >= end || *p != '"' || !(q = scan_string(p, end)))
                goto fail;
        p = skip_ws(q, end);
        if (p >= end || *p != ':')
                goto fail;
        p = skip_ws(p + 1, end);
        goto value;
fail:
        *pp = p;
        return r;
}

/* The head: the request's JSON with the data array of every input cut to
 * `[]`, for jansson; and where the first input's array is in the text. */
struct head {
        const char *text, *end;
        char *out;                      /* [cap] */
        size_t cap;                     /* the text's length, at most V2_MAX_HEAD */
        size_t len;
        struct cut { size_t at, removed; } *cuts; /* in head order: at (in the head) the text had removed more bytes */
        size_t n_cuts, cap_cuts;
        const char *data;               /* the first input's "data" array in text, or NULL */
        size_t data_len;
        const char *fail;               /* where a scan failed */
};

enum head_where { W_OTHER, W_ROOT, W_INPUTS, W_INPUT, W_DATA };

static int head_put(struct head *h, const char *s, size_t n)
{
        if (n > h->cap - h->len)
                return -E2BIG;
        memcpy(h->out + h->len, s, n);
        h->len += n;
        return 0;
}

/* Copies whitespace at *pp, so that the head's offsets map to the text's. */
static int head_ws(struct head *h, const char **pp)
{
        const char *p = skip_ws(*pp, h->end);
        int r = head_put(h, *pp, (size_t)(p - *pp));

        *pp = p;
        return r;
}

/* The data array at p (an input's, index): checked, cut, and noted. */
static int head_cut(struct head *h, const char **pp, int depth, size_t index)
{
        const char *p = *pp, *q = p;
        int r;

        if ((r = scan_value(&q, h->end, V2_MAX_DEPTH - depth)) < 0) {
                h->fail = q;
                return r;
        }
        if (h->n_cuts == h->cap_cuts) {
                size_t cap = h->cap_cuts ? h->cap_cuts * 2 : 4;
                struct cut *c = realloc(h->cuts, cap * sizeof *c);
                if (!c)
                        return -ENOMEM;
                h->cuts = c;
                h->cap_cuts = cap;
        }
        if ((r = head_put(h, "[]", 2)) < 0)
                return r;
        h->cuts[h->n_cuts++] = (struct cut){ .at = h->len, .removed = (size_t)(q - p) - 2 };
        if (index == 0 && !h->data) {
                h->data = p;
                h->data_len = (size_t)(q - p);
        }
        *pp = q;
        return 0;
}

/* Copies the value at *pp (no whitespace before it) into the head, cutting
 * the data arrays of root.inputs[*]: where says which value this is. */
static int head_value(struct head *h, const char **pp, enum head_where where, int depth, size_t index)
{
        const char *p = *pp, *q;
        int r;

        if (p < h->end && where == W_DATA && *p == '[')
                return head_cut(h, pp, depth, index);
        if (p >= h->end || (*p != '{' && *p != '[')) {
                q = p;
                if ((r = scan_value(&q, h->end, 0)) < 0) {
                        h->fail = q;
                        return r;
                }
                *pp = q;
                return head_put(h, p, (size_t)(q - p));
        }
        bool obj = *p == '{';
        char close = obj ? '}' : ']';
        if (depth >= V2_MAX_DEPTH) {
                h->fail = p;
                return -ELOOP;
        }
        if ((r = head_put(h, p++, 1)) < 0 || (r = head_ws(h, &p)) < 0)
                return r;
        if (p < h->end && *p == close) {
                *pp = p + 1;
                return head_put(h, p, 1);
        }
        for (size_t i = 0;; i++) {
                enum head_where w = W_OTHER;
                if (obj) {
                        if (p >= h->end || *p != '"' || !(q = scan_string(p, h->end))) {
                                h->fail = p;
                                return -EBADMSG;
                        }
                        if (where == W_ROOT && string_is(p, "inputs"))
                                w = W_INPUTS;
                        else if (where == W_INPUT && string_is(p, "data"))
                                w = W_DATA;
                        if ((r = head_put(h, p, (size_t)(q - p))) < 0)
                                return r;
                        p = q;
                        if ((r = head_ws(h, &p)) < 0)
                                return r;
                        if (p >= h->end || *p != ':') {
                                h->fail = p;
                                return -EBADMSG;
                        }
                        if ((r = head_put(h, p++, 1)) < 0 || (r = head_ws(h, &p)) < 0)
                                return r;
                } else if (where == W_INPUTS) {
                        w = W_INPUT;
                }
                if ((r = head_value(h, &p, w, depth + 1, where == W_INPUTS ? i : index)) < 0 ||
                    (r = head_ws(h, &p)) < 0)
                        return r;
                if (p < h->end && (*p == ',' || *p == close)) {
                        bool done = *p == close;
                        if ((r = head_put(h, p++, 1)) < 0)
                                return r;
                        if (done) {
                                *pp = p;
                                return 0;
                        }
                        if ((r = head_ws(h, &p)) < 0)
                                return r;
                        continue;
                }
                h->fail = p;
                return -EBADMSG;
        }
}

/* The offset in the text of offset at of the head. */
static size_t head_to_text(const struct head *h, size_t at)
{
        size_t shift = 0;

        for (size_t i = 0; i < h->n_cuts && h->cuts[i].at <= at; i++)
                shift += h->cuts[i].removed;
        return at + shift;
}

/* The request's JSON text (len bytes) as a jansson tree of its head, and
 * where the first input's data array is. */
static int head_parse(struct head *h, const char *text, size_t len, bool framed, char *err, size_t err_len,
                      json_t **ret_root)
{
        const char *p = text;
        json_error_t je;
        int r;

        *h = (struct head){ .text = text, .end = text + len, .cap = len < V2_MAX_HEAD ? len : V2_MAX_HEAD };
        if (!(h->out = malloc(h->cap)))
                return -ENOMEM;
        if ((r = head_ws(h, &p)) == 0 && (r = head_value(h, &p, W_ROOT, 0, 0)) == 0 && (r = head_ws(h, &p)) == 0 &&
            p != h->end) {
                h->fail = p;
                r = -EBADMSG;
        }
        if (r == -E2BIG)
                return err_set(err, err_len, -E2BIG, "the request JSON is more than %zu bytes apart from its "
                               "input's data: send less, or the tensors as binary data", V2_MAX_HEAD);
        if (r == -ELOOP)
                return bad(err, err_len, "the request JSON nests arrays or objects more than %d levels deep, at "
                           "byte %zu%s", V2_MAX_DEPTH, (size_t)(h->fail - text), framed ? " of the header" : "");
        if (r == -EBADMSG)
                return bad(err, err_len, "the request JSON is malformed at byte %zu%s: %s", (size_t)(h->fail - text),
                           framed ? " of the header" : "", h->fail < h->end ? "unexpected character" :
                           "it ends early");
        if (r < 0)
                return r;
        json_t *root = json_loadb(h->out, h->len, JSON_REJECT_DUPLICATES, &je);
        if (!root)
                return bad(err, err_len, "the request JSON is malformed at byte %zu%s: %.100s",
                           head_to_text(h, je.position > 0 ? (size_t)je.position : 0),
                           framed ? " of the header" : "", je.text);
        *ret_root = root;
        return 0;
}

size_t v2_head_bytes(size_t json_len)
{
        return (json_len < V2_MAX_HEAD ? json_len : V2_MAX_HEAD) * V2_HEAD_FACTOR;
}

static void head_done(struct head *h)
{
        free(h->out);
        free(h->cuts);
        h->out = NULL;
        h->cuts = NULL;
}

/* The FP32 input from its JSON data array (checked by scan_value): numbers,
 * flat or nested up to the shape's 4 levels, in row-major order, each
 * parsed with strtof (the nearest float; the process keeps the C locale)
 * straight into the tensor. Every value is counted, so that a wrong count
 * is reported whole. */
static int fp32_from_text(struct v2_request *r, const char *p, const char *end, size_t floats,
                          const char *shape, char *err, size_t err_len)
{
        size_t at = 0;
        int depth = 0;

        for (; p < end; p++) {
                char c = *p;
                if (is_ws(c) || c == ',')
                        continue;
                if (c == '[') {
                        if (++depth > 4)
                                return bad(err, err_len, "input '%s': data must be numbers, flat or nested up to the "
                                           "shape's 4 levels", V2_INPUT_NAME);
                        continue;
                }
                if (c == ']') {
                        depth--;
                        continue;
                }
                if (c != '-' && !is_digit(c))
                        return bad(err, err_len, "input '%s': data must be numbers, flat or nested up to the "
                                   "shape's 4 levels", V2_INPUT_NAME);
                /* A checked number, followed inside the array by ',', ']' or
                 * whitespace: strtof stops where it ends. */
                const char *q = scan_number(p, end);
                if (at < floats) {
                        float v = strtof(p, NULL);
                        if (isinf(v))
                                return bad(err, err_len, "input '%s': a value out of the FP32 range (element %zu)",
                                           V2_INPUT_NAME, at);
                        r->tensor[at] = v;
                }
                at++;
                p = q - 1;
        }
        if (at != floats)
                return bad(err, err_len, "input '%s': %zu values for shape %s, which needs %zu", V2_INPUT_NAME, at,
                           shape, floats);
        return 0;
}

/* The least and greatest value of each image of the FP32 tensor. */
static int fp32_ranges(struct v2_request *r, size_t image_floats)
{
        if (!(r->range = malloc(sizeof(float) * 2 * (size_t)r->n)))
                return -ENOMEM;
        for (size_t i = 0; i < (size_t)r->n; i++) {
                const float *t = r->tensor + i * image_floats;
                float lo = t[0], hi = t[0];
                for (size_t k = 1; k < image_floats; k++) {
                        lo = t[k] < lo ? t[k] : lo;
                        hi = t[k] > hi ? t[k] : hi;
                }
                r->range[2 * i] = lo;
                r->range[2 * i + 1] = hi;
        }
        return 0;
}

/* The FP32 input: JSON data or binary bytes. */
static int parse_fp32(struct v2_request *r, const uint8_t *body, size_t len, const struct v2_model *m,
                      const char *shape, char *err, size_t err_len)
{
        size_t image_floats = 3 * (size_t)m->size * (size_t)m->size, floats = (size_t)r->n * image_floats;
        int e;

        if (!(r->tensor = malloc(sizeof(float) * floats)))
                return -ENOMEM;
        if (r->data_len) {
                const char *p = (const char *)body + r->data_off;
                if ((e = fp32_from_text(r, p, p + r->data_len, floats, shape, err, err_len)) < 0)
                        return e;
                return fp32_ranges(r, image_floats);
        }
        const uint8_t *bin = body + r->bin_off;
        size_t bin_len = len - r->bin_off;
        if (bin_len != floats * sizeof(float))
                return bad(err, err_len,
                           "input '%s': %zu bytes of binary data, but shape %s of FP32 needs %zu",
                           V2_INPUT_NAME, bin_len, shape, floats * sizeof(float));
        /* Little-endian on the wire and here (x86-64, aarch64): a copy, for
         * alignment. A NaN or infinity would only come back as a JSON error. */
        memcpy(r->tensor, bin, bin_len);
        for (size_t i = 0; i < floats; i++)
                if (!isfinite(r->tensor[i]))
                        return bad(err, err_len, "input '%s': element %zu is not a finite number", V2_INPUT_NAME,
                                   i);
        return fp32_ranges(r, image_floats);
}

/* Calls fn for each string of the checked flat JSON array at p (its '['):
 * -EBADMSG for anything but strings, or nested arrays. */
typedef int (*string_fn)(void *userdata, size_t i, const char *s, const char *e);
static int each_string(const char *p, const char *end, string_fn fn, void *userdata, size_t *ret_count)
{
        size_t i = 0;
        int r;

        for (p++; p < end; p++) {
                if (is_ws(*p) || *p == ',')
                        continue;
                if (*p == ']')
                        break;
                if (*p != '"')
                        return -EBADMSG;
                const char *q = scan_string(p, end);
                if (fn && (r = fn(userdata, i, p, q)) < 0)
                        return r;
                i++;
                p = q - 1;
        }
        *ret_count = i;
        return 0;
}

/* A BYTES element: its base64 text unescaped (len bytes, whether it held
 * escapes), and the bytes that decoding it gives. */
struct b64_text {
        size_t len;
        bool escaped;
        size_t decoded;
};

static void b64_text_of(const char *s, const char *e, struct b64_text *ret)
{
        const char *p = s + 1;
        int c, last = 0, before = 0;
        size_t n = 0;

        while ((c = string_next(&p)) >= 0) {
                before = last;
                last = c;
                n++;
        }
        ret->len = n;
        ret->escaped = n != (size_t)(e - s) - 2;
        /* What v2_base64_decode makes of a valid string: up to two '=' of
         * padding carry nothing, and unpadded strings carry 1 or 2 bytes in a
         * last group of 2 or 3 characters, so len / 4 * 3 alone would let an
         * image over the limit by up to 2 bytes. */
        size_t pad = last == '=' ? 1 + (before == '=') : 0;
        if (pad > n)
                pad = n;
        n -= pad;
        ret->decoded = n / 4 * 3 + (n % 4 > 1 ? n % 4 - 1 : 0);
}

struct bytes_ctx {
        struct v2_request *r;
        const struct v2_limits *lim;
        size_t total, used, longest_escaped;
        char *err;
        size_t err_len;
};

/* First pass: every element within the image limit, and the storage they need. */
static int bytes_measure(void *userdata, size_t i, const char *s, const char *e)
{
        struct bytes_ctx *c = userdata;
        struct b64_text t;

        b64_text_of(s, e, &t);
        if (t.decoded > c->lim->max_image_bytes)
                return err_set(c->err, c->err_len, -E2BIG, "input '%s': image %zu is over the limit of %zu bytes",
                               V2_INPUT_NAME, i + 1, c->lim->max_image_bytes);
        c->total += t.decoded + 3;
        if (t.escaped && t.len > c->longest_escaped)
                c->longest_escaped = t.len;
        return 0;
}

/* Second pass: each element decoded into r->decoded; one with escapes
 * (JSON may write '/' as "\/") unescaped first. */
static int bytes_decode(void *userdata, size_t i, const char *s, const char *e)
{
        struct bytes_ctx *c = userdata;
        struct v2_request *r = c->r;
        struct b64_text t;
        char *tmp = NULL;
        const char *in = s + 1;
        size_t l = 0;

        b64_text_of(s, e, &t);
        if (t.escaped) {
                const char *p = s + 1;
                int ch;
                size_t k = 0;
                if (!(tmp = malloc(t.len ? t.len : 1)))
                        return -ENOMEM;
                while ((ch = string_next(&p)) >= 0)
                        tmp[k++] = (char)ch;
                in = tmp;
        }
        int ret = v2_base64_decode(in, t.len, r->decoded + c->used, &l);
        free(tmp);
        if (ret < 0)
                return bad(c->err, c->err_len, "input '%s': element %zu is not base64 (RFC 4648)", V2_INPUT_NAME,
                           i + 1);
        r->images[i] = (struct v2_image){ .data = r->decoded + c->used, .len = l };
        c->used += l;
        return 0;
}

/* BYTES in JSON: a flat array of r->n base64 strings. */
static int bytes_from_text(struct v2_request *r, const char *p, const char *end, const struct v2_limits *lim,
                           char *err, size_t err_len)
{
        struct bytes_ctx c = { .r = r, .lim = lim, .err = err, .err_len = err_len };
        size_t n = (size_t)r->n, count = 0;
        int e;

        if (each_string(p, end, NULL, NULL, &count) < 0)
                return bad(err, err_len, "input '%s': BYTES data must be a flat array of base64 strings",
                           V2_INPUT_NAME);
        if (count != n)
                return bad(err, err_len, "input '%s': %zu elements for shape [%zu]", V2_INPUT_NAME, count, n);
        if ((e = each_string(p, end, bytes_measure, &c, &count)) < 0)
                return e;
        if (!(r->decoded = malloc(c.total ? c.total : 1)))
                return -ENOMEM;
        return each_string(p, end, bytes_decode, &c, &count);
}

/* BYTES in binary: r->n elements, each a 4-byte little-endian length and
 * that many bytes, filling bin exactly. */
static int bytes_from_binary(struct v2_request *r, const uint8_t *bin, size_t bin_len,
                             const struct v2_limits *lim, char *err, size_t err_len)
{
        size_t n = (size_t)r->n, off = 0;

        for (size_t i = 0; i < n; i++) {
                if (bin_len - off < 4)
                        return bad(err, err_len, "input '%s': binary data ends before the length of element "
                                   "%zu of %zu", V2_INPUT_NAME, i + 1, n);
                size_t l = le32(bin + off);
                off += 4;
                if (l > lim->max_image_bytes)
                        return err_set(err, err_len, -E2BIG, "input '%s': image %zu has %zu bytes; the limit is "
                                       "%zu", V2_INPUT_NAME, i + 1, l, lim->max_image_bytes);
                if (l > bin_len - off)
                        return bad(err, err_len, "input '%s': element %zu of %zu bytes runs past the end of its "
                                   "binary data (%zu bytes left)", V2_INPUT_NAME, i + 1, l, bin_len - off);
                r->images[i] = (struct v2_image){ .data = bin + off, .len = l };
                off += l;
        }
        if (off != bin_len)
                return bad(err, err_len, "input '%s': %zu bytes after its %zu elements of binary data",
                           V2_INPUT_NAME, bin_len - off, n);
        return 0;
}


/* The requested output and the request's parameters. */
static int parse_outputs(struct v2_request *r, const json_t *root, const struct v2_model *m, char *err,
                         size_t err_len)
{
        const json_t *params = json_object_get(root, "parameters");
        const json_t *outs = json_object_get(root, "outputs");
        int binary = -1;   /* unset: from binary_data_output */
        size_t i;
        json_t *o;

        if (params && !json_is_object(params))
                return bad(err, err_len, "'parameters' must be an object");
        const json_t *bdo = json_object_get(params, "binary_data_output");
        if (bdo && !json_is_boolean(bdo))
                return bad(err, err_len, "parameter 'binary_data_output' must be true or false");
        if (outs && !json_is_array(outs))
                return bad(err, err_len, "'outputs' must be an array");
        if (json_array_size(outs) > 1)
                return bad(err, err_len, "model '%s' has one output ('%s'); the request asks for %zu", m->name,
                           V2_OUTPUT_NAME, json_array_size(outs));
        json_array_foreach(outs, i, o) {
                const json_t *name = json_object_get(o, "name");
                if (!json_is_object(o) || !json_is_string(name))
                        return bad(err, err_len, "each requested output needs a 'name'");
                if (strcmp(json_string_value(name), V2_OUTPUT_NAME) != 0)
                        return bad(err, err_len, "unexpected inference output '%.64s' for model '%s' (it has '%s')",
                                   json_string_value(name), m->name, V2_OUTPUT_NAME);
                const json_t *op = json_object_get(o, "parameters");
                if (op && !json_is_object(op))
                        return bad(err, err_len, "output '%s': 'parameters' must be an object", V2_OUTPUT_NAME);
                const json_t *bd = json_object_get(op, "binary_data");
                if (bd && !json_is_boolean(bd))
                        return bad(err, err_len, "output '%s': parameter 'binary_data' must be true or false",
                                   V2_OUTPUT_NAME);
                if (bd)
                        binary = json_is_true(bd);
                const json_t *cls = json_object_get(op, "classification");
                if (cls) {
                        json_int_t k = json_is_integer(cls) ? json_integer_value(cls) : -1;
                        if (k < 0 || k > m->classes)
                                return bad(err, err_len, "output '%s': parameter 'classification' must be an "
                                           "integer in 0..%d", V2_OUTPUT_NAME, m->classes);
                        r->classification = (int)k;
                }
        }
        r->binary_output = binary >= 0 ? binary : json_is_true(bdo);
        return 0;
}

/* The input's shape: integers >= -1 (checked against the model later). */
static int parse_shape(const json_t *shape, int64_t *dims, size_t *rank, char *err, size_t err_len)
{
        size_t i;
        json_t *d;

        if (!json_is_array(shape) || json_array_size(shape) > 8)
                return bad(err, err_len, "input '%s': 'shape' must be an array of up to 8 integers", V2_INPUT_NAME);
        json_array_foreach(shape, i, d) {
                if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > INT32_MAX)
                        return bad(err, err_len, "input '%s': 'shape' must hold integers in 0..%d", V2_INPUT_NAME,
                                   INT32_MAX);
                dims[i] = json_integer_value(d);
        }
        *rank = json_array_size(shape);
        return 0;
}

/* The one input's name, datatype and shape: sets r->datatype and r->n. */
static int parse_input_head(struct v2_request *r, const json_t *in, const struct v2_model *m,
                            const struct v2_limits *lim, char *shape, size_t shape_len, char *err, size_t err_len)
{
        const json_t *name = json_object_get(in, "name"), *dtype = json_object_get(in, "datatype");
        int64_t dims[8];
        size_t rank = 0;
        int ret;

        if (!json_is_object(in) || !json_is_string(name) || !json_is_string(dtype))
                return bad(err, err_len, "the input needs a 'name', a 'datatype' and a 'shape'");
        if (strcmp(json_string_value(name), V2_INPUT_NAME) != 0)
                return bad(err, err_len, "unexpected inference input '%.64s' for model '%s' (it has '%s')",
                           json_string_value(name), m->name, V2_INPUT_NAME);
        if ((ret = parse_shape(json_object_get(in, "shape"), dims, &rank, err, err_len)) < 0)
                return ret;
        shape_str(dims, rank, shape, shape_len);
        if (strcmp(json_string_value(dtype), "FP32") == 0) {
                r->datatype = V2_FP32;
                if (rank != 4 || dims[1] != 3 || dims[2] != m->size || dims[3] != m->size)
                        return bad(err, err_len, "input '%s': shape %s of FP32 does not match the model's "
                                   "[-1,3,%d,%d] (NCHW)", V2_INPUT_NAME, shape, m->size, m->size);
        } else if (strcmp(json_string_value(dtype), "BYTES") == 0) {
                r->datatype = V2_BYTES;
                if (rank != 1)
                        return bad(err, err_len, "input '%s': shape %s of BYTES must be [N], one encoded image "
                                   "per element", V2_INPUT_NAME, shape);
        } else {
                return bad(err, err_len, "input '%s': datatype %.32s; the model takes FP32 [-1,3,%d,%d] or BYTES "
                           "[N] (encoded images)", V2_INPUT_NAME, json_string_value(dtype), m->size, m->size);
        }
        if (dims[0] < 1)
                return bad(err, err_len, "input '%s': shape %s has no images", V2_INPUT_NAME, shape);
        if (dims[0] > lim->max_images)
                return err_set(err, err_len, -E2BIG, "input '%s': %lld images in one request; the limit is %d",
                               V2_INPUT_NAME, (long long)dims[0], lim->max_images);
        r->n = (int)dims[0];
        return 0;
}

/* Where the input's data is: JSON 'data', or bin_len bytes of binary data
 * after the header (header_len >= 0), which binary_data_size, when given,
 * must match exactly. */
static int check_input_framing(const json_t *in, int64_t header_len, size_t bin_len, char *err, size_t err_len)
{
        const json_t *data = json_object_get(in, "data");
        const json_t *ip = json_object_get(in, "parameters");

        if (ip && !json_is_object(ip))
                return bad(err, err_len, "input '%s': 'parameters' must be an object", V2_INPUT_NAME);
        const json_t *bds = json_object_get(ip, "binary_data_size");
        if (bds) {
                if (!json_is_integer(bds) || json_integer_value(bds) < 0)
                        return bad(err, err_len, "input '%s': 'binary_data_size' must be a non-negative integer",
                                   V2_INPUT_NAME);
                if (header_len < 0)
                        return bad(err, err_len, "input '%s' has binary_data_size but the request has no "
                                   "Inference-Header-Content-Length header", V2_INPUT_NAME);
                if (data)
                        return bad(err, err_len, "input '%s' has both 'data' and binary_data_size", V2_INPUT_NAME);
                uint64_t want = (uint64_t)json_integer_value(bds);
                if (want > bin_len)
                        return bad(err, err_len, "input '%s': binary_data_size %llu, but the body has %zu bytes "
                                   "after the header (truncated?)", V2_INPUT_NAME, (unsigned long long)want,
                                   bin_len);
                if (want < bin_len)
                        return bad(err, err_len, "%zu bytes after the binary data of the inputs",
                                   bin_len - (size_t)want);
        } else if (data) {
                if (!json_is_array(data))
                        return bad(err, err_len, "input '%s': 'data' must be an array", V2_INPUT_NAME);
                if (bin_len)
                        return bad(err, err_len, "%zu bytes after the header, but no input has binary_data_size",
                                   bin_len);
        } else if (header_len < 0) {
                return bad(err, err_len, "input '%s' has no 'data' (and no binary data)", V2_INPUT_NAME);
        }
        /* else: the one input's binary data is the rest of the body */
        return 0;
}

/* The request's 'id', 'outputs' and its one input. */
/* The request's 'id', 'outputs' and its one input's head; where its data is. */
static int parse_root(struct v2_request *r, const json_t *root, const struct head *h, size_t hlen, size_t len,
                      int64_t header_len, const struct v2_model *m, const struct v2_limits *lim, char *err,
                      size_t err_len)
{
        char shape[128];
        int ret;

        if (!json_is_object(root))
                return bad(err, err_len, "the request must be a JSON object");
        const json_t *id = json_object_get(root, "id");
        if (id && (!json_is_string(id) || json_string_length(id) > V2_MAX_ID))
                return bad(err, err_len, "'id' must be a string of up to %d bytes", V2_MAX_ID);
        if (id && !(r->id = strdup(json_string_value(id))))
                return -ENOMEM;
        if ((ret = parse_outputs(r, root, m, err, err_len)) < 0)
                return ret;
        const json_t *inputs = json_object_get(root, "inputs");
        if (!json_is_array(inputs) || json_array_size(inputs) != 1)
                return bad(err, err_len, "model '%s' has one input ('%s'); the request has %zu", m->name,
                           V2_INPUT_NAME, json_array_size(inputs));
        const json_t *in = json_array_get(inputs, 0);
        if ((ret = parse_input_head(r, in, m, lim, shape, sizeof shape, err, err_len)) < 0 ||
            (ret = check_input_framing(in, header_len, len - hlen, err, err_len)) < 0)
                return ret;
        r->bin_off = hlen;
        if (json_object_get(in, "data")) {
                /* An array (checked above), so cut from the head. */
                r->data_off = (size_t)(h->data - h->text);
                r->data_len = h->data_len;
        }
        return 0;
}

int v2_parse_head(const uint8_t *body, size_t len, int64_t header_len, const struct v2_model *m,
                  const struct v2_limits *lim, char *err, size_t err_len, struct v2_request **ret_request)
{
        struct v2_request *r = NULL;
        struct head h = { 0 };
        json_t *root = NULL;
        size_t hlen = len;
        int ret;

        if (header_len >= 0) {
                if ((uint64_t)header_len > len)
                        return bad(err, err_len, "Inference-Header-Content-Length %lld is more than the body's %zu "
                                   "bytes", (long long)header_len, len);
                hlen = (size_t)header_len;
        }
        if (hlen == 0)
                return bad(err, err_len, "empty request: send the inference request JSON");
        if ((ret = head_parse(&h, (const char *)body, hlen, header_len >= 0, err, err_len, &root)) < 0)
                goto out;
        if (!(r = calloc(1, sizeof *r)))
                ret = -ENOMEM;
        else
                ret = parse_root(r, root, &h, hlen, len, header_len, m, lim, err, err_len);
out:
        if (ret < 0) {
                if (ret == -ENOMEM)
                        err_set(err, err_len, -ENOMEM, "out of memory");
                v2_request_free(r);
        } else {
                *ret_request = r;
        }
        json_decref(root);
        head_done(&h);
        return ret;
}

size_t v2_request_data_bytes(const struct v2_request *r, const struct v2_model *m, const struct v2_limits *lim)
{
        size_t n = (size_t)r->n;

        if (r->datatype == V2_FP32)
                return sizeof(float) * (n * 3 * (size_t)m->size * (size_t)m->size + 2 * n);
        size_t bytes = n * sizeof(struct v2_image);
        if (r->data_len) {
                /* Base64 makes 3 bytes of 4 characters, each image is within
                 * the limit, and one with escapes is unescaped first, into a
                 * copy no longer than its text nor than an image's base64. */
                size_t decoded = r->data_len / 4 * 3 + 3 * n, most = n * (lim->max_image_bytes + 3);
                size_t unescaped = lim->max_image_bytes / 3 * 4 + 4;
                bytes += (decoded < most ? decoded : most) + (r->data_len < unescaped ? r->data_len : unescaped) + 8;
        }
        return bytes;
}

int v2_parse_data(struct v2_request *r, const uint8_t *body, size_t len, const struct v2_model *m,
                  const struct v2_limits *lim, char *err, size_t err_len)
{
        char shape[128];
        int ret;

        if (r->datatype == V2_FP32) {
                int64_t dims[4] = { r->n, 3, m->size, m->size };
                shape_str(dims, 4, shape, sizeof shape);
                ret = parse_fp32(r, body, len, m, shape, err, err_len);
        } else if (!(r->images = calloc((size_t)r->n, sizeof *r->images))) {
                ret = -ENOMEM;
        } else if (r->data_len) {
                const char *p = (const char *)body + r->data_off;
                ret = bytes_from_text(r, p, p + r->data_len, lim, err, err_len);
        } else {
                ret = bytes_from_binary(r, body + r->bin_off, len - r->bin_off, lim, err, err_len);
        }
        if (ret == -ENOMEM)
                err_set(err, err_len, -ENOMEM, "out of memory");
        r->parsed = ret == 0;
        return ret;
}

int v2_parse_infer(const uint8_t *body, size_t len, int64_t header_len, const struct v2_model *m,
                   const struct v2_limits *lim, char *err, size_t err_len, struct v2_request **ret_request)
{
        struct v2_request *r = NULL;
        int ret = v2_parse_head(body, len, header_len, m, lim, err, err_len, &r);

        if (ret < 0)
                return ret;
        if ((ret = v2_parse_data(r, body, len, m, lim, err, err_len)) < 0) {
                v2_request_free(r);
                return ret;
        }
        *ret_request = r;
        return 0;
}

int v2_check_logits(const struct v2_model *m, const struct v2_request *r, const float *logits, char *err,
                    size_t err_len)
{
        size_t classes = (size_t)m->classes;
        int client = -1;   /* the first image whose wild input overflowed */

        for (size_t i = 0; i < (size_t)r->n; i++) {
                bool finite = true;
                for (size_t k = 0; k < classes && finite; k++)
                        finite = isfinite(logits[i * classes + k]);
                if (finite)
                        continue;
                if (!r->range || (r->range[2 * i] >= -V2_INPUT_PLAUSIBLE && r->range[2 * i + 1] <= V2_INPUT_PLAUSIBLE))
                        return -EDOM;
                if (client < 0)
                        client = (int)i;
        }
        if (client < 0)
                return 0;
        return err_set(err, err_len, -ERANGE, "input '%s': image %d holds values from %g to %g, and the model's "
                       "outputs overflowed to NaN or Inf; a normalized image holds values within about +-3 (and "
                       "8-bit pixels within 255)", V2_INPUT_NAME, client + 1, (double)r->range[2 * client],
                       (double)r->range[2 * client + 1]);
}

/* ---- bodies ------------------------------------------------------------------ */

/* Serializes and frees root. Reals keep 9 significant digits: FP32 outputs
 * read back as the very floats computed. */
static int dump(json_t *root, char **ret_body)
{
        if (!root)
                return -ENOMEM;
        char *s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(9));
        json_decref(root);
        if (!s)
                return -ENOMEM;
        *ret_body = s;
        return 0;
}

int v2_error_body(const char *message, char **ret_body)
{
        /* Messages quote what the client sent (a model name): bytes that are
         * not UTF-8 would make the JSON fail, and the answer a 500. */
        char clean[1024];
        str_escape(message ? message : "", clean, sizeof clean);
        return dump(json_pack("{s:s}", "error", clean), ret_body);
}

int v2_server_body(char **ret_body)
{
        return dump(json_pack("{s:s, s:s, s:[s,s,s]}", "name", "effnetd", "version", EFFNET_VERSION, "extensions",
                              "binary_tensor_data", "classification", "model_configuration"),
                    ret_body);
}

int v2_model_body(const struct v2_model *m, const int64_t *versions, int n, char **ret_body)
{
        char version[24];
        json_t *list = json_array();

        for (int i = 0; list && i < n; i++) {
                snprintf(version, sizeof version, "%lld", (long long)versions[i]);
                if (json_array_append_new(list, json_string(version)) < 0) {
                        json_decref(list);
                        list = NULL;
                }
        }
        if (list && n == 0 && json_array_append_new(list, json_string(version_text(m, version))) < 0) {
                json_decref(list);
                list = NULL;
        }
        if (!list)
                return -ENOMEM;
        return dump(json_pack("{s:s, s:o, s:s, s:[{s:s, s:s, s:[i,i,i,i]}], s:[{s:s, s:s, s:[i,i]}]}", "name",
                              m->name, "versions", list, "platform", V2_PLATFORM, "inputs", "name",
                              V2_INPUT_NAME, "datatype", "FP32", "shape", -1, 3, m->size, m->size, "outputs", "name",
                              V2_OUTPUT_NAME, "datatype", "FP32", "shape", -1, m->classes),
                    ret_body);
}

/* Triton's model parameters (a map of {"string_value": ...}): where the
 * weights and the class names come from, as /v1/models says, so that a v2
 * client sees untrained seeded weights for what they are. */
static json_t *config_parameters(const struct v2_model *m)
{
        json_t *p = json_object();
        const struct api_weights *w = m->weights;
        char seed[24];
        int r = 0;

        if (!p)
                return NULL;
        r |= json_object_set_new(p, "labels_source",
                                 json_pack("{s:s}", "string_value",
                                           m->labels_source ? m->labels_source : api_labels_source(m->labels)));
        if (w) {
                r |= json_object_set_new(p, "weights_source",
                                         json_pack("{s:s}", "string_value", api_weights_source_name(w->source)));
                r |= json_object_set_new(p, "weights_sha256", json_pack("{s:s}", "string_value", w->sha256 ? w->sha256 : ""));
                if (w->seed >= 0) {
                        snprintf(seed, sizeof seed, "%lld", (long long)w->seed);
                        r |= json_object_set_new(p, "weights_trained", json_pack("{s:s}", "string_value", "false"));
                        r |= json_object_set_new(p, "weights_seed", json_pack("{s:s}", "string_value", seed));
                }
                if (w->source == API_WEIGHTS_HUB && w->repo && w->commit) {
                        r |= json_object_set_new(p, "weights_repo", json_pack("{s:s}", "string_value", w->repo));
                        r |= json_object_set_new(p, "weights_commit", json_pack("{s:s}", "string_value", w->commit));
                }
        }
        if (r) {
                json_decref(p);
                return NULL;
        }
        return p;
}

int v2_config_body(const struct v2_model *m, char **ret_body)
{
        json_t *sizes = json_array();

        for (int i = 0; sizes && i < m->n_exec; i++)
                if (json_array_append_new(sizes, json_integer(m->exec_batch[i])) < 0) {
                        json_decref(sizes);
                        return -ENOMEM;
                }
        if (!sizes)
                return -ENOMEM;
        json_t *params = config_parameters(m);
        if (!params) {
                json_decref(sizes);
                return -ENOMEM;
        }
        return dump(json_pack("{s:s, s:s, s:s, s:{s:{s:i}}, s:i, s:o,"
                              " s:[{s:s, s:s, s:s, s:[i,i,i]}], s:[{s:s, s:s, s:[i]}],"
                              " s:{s:o, s:I}}",
                              "name", m->name, "platform", V2_PLATFORM, "backend", "onednn",
                              "version_policy", "latest", "num_versions", 1, "max_batch_size", m->max_batch,
                              "parameters", params,
                              "input", "name", V2_INPUT_NAME, "data_type", "TYPE_FP32", "format", "FORMAT_NCHW",
                              "dims", 3, m->size, m->size,
                              "output", "name", V2_OUTPUT_NAME, "data_type", "TYPE_FP32", "dims", m->classes,
                              "dynamic_batching", "preferred_batch_size", sizes, "max_queue_delay_microseconds",
                              (json_int_t)m->max_delay_us),
                    ret_body);
}

/* "0.812345:281:tabby" as Triton writes it (std::to_string of the float);
 * without the label when the model has none but indices. */
static int class_string(const struct v2_model *m, float p, int idx, char *buf, size_t n)
{
        bool labelled = strcmp(api_labels_source(m->labels), "indices") != 0;
        if (labelled)
                return snprintf(buf, n, "%f:%d:%s", (double)p, idx, api_labels_get(m->labels, idx));
        return snprintf(buf, n, "%f:%d", (double)p, idx);
}

/* Binary output data, grown as strings are appended. */
struct bin_buf {
        uint8_t *data;
        size_t len, cap;
};

/* Appends one BYTES element: its 4-byte little-endian length, then s. */
static int bin_put_string(struct bin_buf *b, const char *s, size_t l)
{
        if (b->len + 4 + l > b->cap) {
                size_t cap = b->cap ? b->cap * 2 : 4096;
                while (cap < b->len + 4 + l)
                        cap *= 2;
                uint8_t *d = realloc(b->data, cap);
                if (!d)
                        return -ENOMEM;
                b->data = d;
                b->cap = cap;
        }
        uint32_t ul = (uint32_t)l;
        uint8_t le[4] = { (uint8_t)ul, (uint8_t)(ul >> 8), (uint8_t)(ul >> 16), (uint8_t)(ul >> 24) };
        memcpy(b->data + b->len, le, 4);
        memcpy(b->data + b->len + 4, s, l);
        b->len += 4 + l;
        return 0;
}

/* The classification extension: k strings per image, into out's "data"
 * or, for a binary output, into bin. probs: [n][classes]. */
static int put_classes(const struct v2_model *m, const struct v2_request *r, const float *probs, json_t *out,
                       struct bin_buf *bin)
{
        size_t classes = (size_t)m->classes, k = (size_t)r->classification;
        json_t *data = NULL;
        int *idx = malloc(sizeof(int) * k);
        int ret = -ENOMEM;

        if (!idx)
                return -ENOMEM;
        if (!r->binary_output && (!(data = json_array()) || json_object_set_new(out, "data", data) < 0))
                goto out;
        for (size_t i = 0; i < (size_t)r->n; i++) {
                const float *p = probs + i * classes;
                int got = effnet_topk(p, (int)classes, (int)k, idx);
                for (int j = 0; j < got; j++) {
                        /* Labels are short (ImageNet's longest is under 100
                         * bytes); a longer one from a labels file is cut at 500. */
                        char s[512];
                        int l = class_string(m, p[idx[j]], idx[j], s, sizeof s);
                        if (l < 0)
                                goto out;
                        if ((size_t)l >= sizeof s)
                                l = (int)sizeof s - 1;
                        if (data ? json_array_append_new(data, json_stringn(s, (size_t)l)) < 0
                                 : bin_put_string(bin, s, (size_t)l) < 0)
                                goto out;
                }
        }
        ret = 0;
out:
        free(idx);
        return ret;
}

/* FP32 probabilities [n][classes], into out's "data" or into bin. */
static int put_probabilities(const struct v2_request *r, const float *probs, size_t count, json_t *out,
                             struct bin_buf *bin)
{
        if (r->binary_output) {
                if (!(bin->data = malloc(count * sizeof(float))))
                        return -ENOMEM;
                memcpy(bin->data, probs, count * sizeof(float));
                bin->len = bin->cap = count * sizeof(float);
                return 0;
        }
        json_t *data = json_array();
        if (!data || json_object_set_new(out, "data", data) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < count; i++)
                if (json_array_append_new(data, json_real((double)probs[i])) < 0)
                        return -ENOMEM;
        return 0;
}

/* The answer: the JSON header, then the binary output data if any. */
static int frame_answer(const struct v2_model *m, const struct v2_request *r, json_t *out, const struct bin_buf *bin,
                        char **ret_body, size_t *ret_len, size_t *ret_header_len)
{
        char version[24];
        json_t *root = json_pack("{s:s, s:s, s:[O]}", "model_name", m->name, "model_version", version_text(m, version),
                                 "outputs", out);
        char *head = NULL;
        int ret;

        if (!root || (r->id && json_object_set_new(root, "id", json_string(r->id)) < 0)) {
                json_decref(root);
                return -ENOMEM;
        }
        if ((ret = dump(root, &head)) < 0)
                return ret;
        size_t hlen = strlen(head);
        if (r->binary_output) {
                char *all = malloc(hlen + bin->len + 1);
                if (!all) {
                        free(head);
                        return -ENOMEM;
                }
                memcpy(all, head, hlen);
                if (bin->len)
                        memcpy(all + hlen, bin->data, bin->len);
                all[hlen + bin->len] = '\0';
                free(head);
                head = all;
        }
        *ret_body = head;
        *ret_len = hlen + (r->binary_output ? bin->len : 0);
        *ret_header_len = hlen;
        return 0;
}

int v2_infer_body(const struct v2_model *m, const struct v2_request *r, float *logits, char **ret_body,
                  size_t *ret_len, size_t *ret_header_len)
{
        size_t classes = (size_t)m->classes, n = (size_t)r->n, k = (size_t)r->classification;
        struct bin_buf bin = { 0 };
        json_t *out = NULL;
        int ret = -ENOMEM;

        /* NaN or Inf would make softmax and the JSON meaningless. */
        for (size_t i = 0; i < n * classes; i++)
                if (!isfinite(logits[i]))
                        return -EDOM;
        for (size_t i = 0; i < n; i++)
                effnet_softmax(logits + i * classes, (int)classes);
        out = json_pack("{s:s, s:s, s:[I,I]}", "name", V2_OUTPUT_NAME, "datatype", k ? "BYTES" : "FP32", "shape",
                        (json_int_t)n, (json_int_t)(k ? k : classes));
        if (!out)
                goto out;
        if ((ret = k ? put_classes(m, r, logits, out, &bin) : put_probabilities(r, logits, n * classes, out, &bin)) < 0)
                goto out;
        ret = -ENOMEM;
        if (r->binary_output) {
                json_t *params = json_pack("{s:I}", "binary_data_size", (json_int_t)bin.len);
                if (!params || json_object_set_new(out, "parameters", params) < 0)
                        goto out;
        }
        ret = frame_answer(m, r, out, &bin, ret_body, ret_len, ret_header_len);
out:
        free(bin.data);
        json_decref(out);
        return ret;
}

int v2_repository_index_body(const struct v2_index_row *rows, int n, char **ret_body)
{
        json_t *list = json_array();
        char version[24];

        if (!list)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                json_t *o = json_object();
                if (!o) {
                        json_decref(list);
                        return -ENOMEM;
                }
                json_object_set_new(o, "name", json_string(rows[i].name));
                if (rows[i].version > 0) {
                        snprintf(version, sizeof version, "%lld", (long long)rows[i].version);
                        json_object_set_new(o, "version", json_string(version));
                }
                if (rows[i].state)
                        json_object_set_new(o, "state", json_string(rows[i].state));
                if (rows[i].reason && *rows[i].reason)
                        json_object_set_new(o, "reason", json_string(rows[i].reason));
                json_array_append_new(list, o);
        }
        return dump(list, ret_body);
}

/* safetensors: validating reader (mmap or caller buffer) and atomic writer of .safetensors weight files. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* GNU strerror_r, mkostemp */
#endif
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes of a tensor name quoted in an error message; longer names are cut. */
#define NAME_IN_MSG 80

struct st_file {
        void *map;                       /* mmap of the whole file, or NULL for st_parse */
        size_t map_len;
        size_t n;                        /* tensors, "__metadata__" excluded */
        struct st_tensor *tensors;       /* [n] in header order */
        const struct st_tensor **by_name; /* [n] into tensors, sorted by strcmp(name) */
        char *names;                     /* every name, NUL-terminated, back to back */
        json_t *meta;                    /* "__metadata__" (strings), or NULL; a reference */
};

struct dtype_info {
        const char *name;
        int dtype;
        size_t size;
};

/* Every dtype of the format with a whole-byte element. Sub-byte types (F4,
 * F6_*) are rejected: their byte length is not numel x size. */
static const struct dtype_info dtypes[] = {
        { "F32", ST_F32, 4 },      { "F16", ST_F16, 2 },          { "BF16", ST_BF16, 2 },
        { "F64", ST_OTHER, 8 },    { "I64", ST_OTHER, 8 },        { "I32", ST_OTHER, 4 },
        { "I16", ST_OTHER, 2 },    { "I8", ST_OTHER, 1 },         { "U64", ST_OTHER, 8 },
        { "U32", ST_OTHER, 4 },    { "U16", ST_OTHER, 2 },        { "U8", ST_OTHER, 1 },
        { "BOOL", ST_OTHER, 1 },   { "F8_E4M3", ST_OTHER, 1 },    { "F8_E5M2", ST_OTHER, 1 },
        { "F8_E8M0", ST_OTHER, 1 }, { "C64", ST_OTHER, 8 },
};

static const struct dtype_info *dtype_lookup(const char *name)
{
        for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
                if (strcmp(dtypes[i].name, name) == 0)
                        return &dtypes[i];
        return NULL;
}

static const struct dtype_info *dtype_of(int dtype)
{
        for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
                if (dtypes[i].dtype == dtype && dtype != ST_OTHER)
                        return &dtypes[i];
        return NULL;
}

/* ---- error messages ------------------------------------------------------ */

struct errbuf {
        char *buf;
        size_t len;
        const char *origin; /* path prefixed to every message, or NULL */
};

/* Writes "origin: message" and returns code. Control bytes become '?' because
 * names and JSON excerpts come from the file and end up in logs and terminals. */
static int errbuf_set(const struct errbuf *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errbuf_set(const struct errbuf *e, int code, const char *fmt, ...)
{
        va_list ap;
        size_t off = 0;

        if (!e->buf || e->len == 0)
                return code;
        if (e->origin) {
                int k = snprintf(e->buf, e->len, "%s: ", e->origin);
                off = k < 0 ? 0 : (size_t)k < e->len ? (size_t)k : e->len - 1;
        }
        va_start(ap, fmt);
        vsnprintf(e->buf + off, e->len - off, fmt, ap);
        va_end(ap);
        for (char *p = e->buf; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = '?';
        return code;
}

/* The name as it goes into a message: at most NAME_IN_MSG bytes, cut on a
 * UTF-8 character boundary, and visible even when empty. */
static const char *msg_name(const char *name, char out[NAME_IN_MSG + 4])
{
        size_t n = strlen(name), cut = NAME_IN_MSG;

        if (n == 0)
                return "\"\"";
        if (n <= NAME_IN_MSG)
                return name;
        while (cut > 0 && ((unsigned char)name[cut] & 0xc0) == 0x80)
                cut--;
        memcpy(out, name, cut);
        memcpy(out + cut, "...", 4);
        return out;
}

static void shape_str(const int64_t *shape, int ndim, char *out, size_t len)
{
        size_t off = 0;
        int k;

        k = snprintf(out, len, "[");
        for (int i = 0; i < ndim && k >= 0 && (off += (size_t)k) < len; i++)
                k = snprintf(out + off, len - off, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (k >= 0 && (off += (size_t)k) < len)
                snprintf(out + off, len - off, "]");
}

/* ---- header validation --------------------------------------------------- */

static uint64_t load_le64(const unsigned char *p)
{
        uint64_t v = 0;

        for (int i = 7; i >= 0; i--)
                v = v << 8 | p[i];
        return v;
}

/* jansson reports a duplicate key without naming it, at the byte after the
 * key's closing quote. Recovers the key from the text so the message can name
 * the tensor; falls back to NULL if the text does not look as expected. */
static char *duplicate_key(const char *text, size_t len, size_t end)
{
        size_t q;

        if (end < 2 || end > len || text[end - 1] != '"')
                return NULL;
        for (q = end - 1; q-- > 0;) {
                size_t bs = 0;

                if (text[q] != '"')
                        continue;
                while (bs < q && text[q - 1 - bs] == '\\')
                        bs++;
                if (bs % 2 == 0)
                        break;
        }
        if (q == (size_t)-1)
                return NULL;

        json_t *s = json_loadb(text + q, end - q, JSON_DECODE_ANY, NULL);
        char *key = json_is_string(s) ? strdup(json_string_value(s)) : NULL;
        json_decref(s);
        return key;
}

/* Where a tensor's bytes lie in the data area: [begin, end). */
struct span {
        uint64_t begin, end;
        const struct st_tensor *t;
};

static bool json_is_index(const json_t *v)
{
        return json_is_integer(v) && json_integer_value(v) >= 0;
}

/* Elements of a shape: a zero dimension makes the tensor empty whatever the
 * others say; otherwise every partial product must fit in int64_t, checked
 * before it is made. Dimensions must be non-negative. -EOVERFLOW if not. */
static int shape_numel(const int64_t *shape, int ndim, int64_t *ret_numel)
{
        int64_t numel = 1;

        for (int i = 0; i < ndim; i++)
                if (shape[i] == 0) {
                        *ret_numel = 0;
                        return 0;
                }
        for (int i = 0; i < ndim; i++) {
                if (numel > INT64_MAX / shape[i])
                        return -EOVERFLOW;
                numel *= shape[i];
        }
        *ret_numel = numel;
        return 0;
}

/* The three fields of an entry, each once, and no other. */
struct entry_fields {
        json_t *dtype, *shape, *offsets;
};

static int split_entry(const struct errbuf *e, const char *n, json_t *entry, struct entry_fields *ret_fields)
{
        struct entry_fields fl = { NULL, NULL, NULL };
        const char *key;
        json_t *v;

        if (!json_is_object(entry))
                return errbuf_set(e, -EBADMSG, "%s: entry is not a JSON object", n);
        json_object_foreach(entry, key, v) {
                if (strcmp(key, "dtype") == 0)
                        fl.dtype = v;
                else if (strcmp(key, "shape") == 0)
                        fl.shape = v;
                else if (strcmp(key, "data_offsets") == 0)
                        fl.offsets = v;
                else
                        return errbuf_set(e, -EBADMSG, "%s: unexpected field \"%.40s\"", n, key);
        }
        if (!fl.dtype || !fl.shape || !fl.offsets)
                return errbuf_set(e, -EBADMSG, "%s: missing field \"%s\"", n,
                                  !fl.dtype ? "dtype" : !fl.shape ? "shape" : "data_offsets");
        *ret_fields = fl;
        return 0;
}

static int entry_dtype(const struct errbuf *e, const char *n, const json_t *dtype,
                       const struct dtype_info **ret_di)
{
        const struct dtype_info *di;

        if (!json_is_string(dtype))
                return errbuf_set(e, -EBADMSG, "%s: \"dtype\" is not a string", n);
        di = dtype_lookup(json_string_value(dtype));
        if (!di)
                return errbuf_set(e, -EBADMSG, "%s: unknown dtype \"%.16s\"", n, json_string_value(dtype));
        *ret_di = di;
        return 0;
}

/* Fills t->ndim and t->shape. */
static int entry_shape(const struct errbuf *e, const char *n, const json_t *shape, struct st_tensor *t)
{
        if (!json_is_array(shape))
                return errbuf_set(e, -EBADMSG, "%s: \"shape\" is not an array", n);
        if (json_array_size(shape) > ST_MAX_DIMS)
                return errbuf_set(e, -E2BIG, "%s: shape has %zu dimensions, more than the limit of %d", n,
                                  json_array_size(shape), ST_MAX_DIMS);
        t->ndim = (int)json_array_size(shape);
        for (int i = 0; i < t->ndim; i++) {
                const json_t *v = json_array_get(shape, (size_t)i);

                if (!json_is_integer(v))
                        return errbuf_set(e, -EBADMSG, "%s: shape[%d] is not an integer", n, i);
                if (json_integer_value(v) < 0)
                        return errbuf_set(e, -EBADMSG, "%s: shape[%d] is negative (%lld)", n, i,
                                          (long long)json_integer_value(v));
                t->shape[i] = json_integer_value(v);
        }
        return 0;
}

/* [begin, end] within a data area of data_len bytes. */
static int entry_offsets(const struct errbuf *e, const char *n, const json_t *offsets, uint64_t data_len,
                         struct span *ret_span)
{
        if (!json_is_array(offsets) || json_array_size(offsets) != 2)
                return errbuf_set(e, -EBADMSG, "%s: \"data_offsets\" is not an array [begin, end]", n);
        if (!json_is_index(json_array_get(offsets, 0)) || !json_is_index(json_array_get(offsets, 1)))
                return errbuf_set(e, -EBADMSG, "%s: \"data_offsets\" are not non-negative integers", n);
        uint64_t begin = (uint64_t)json_integer_value(json_array_get(offsets, 0));
        uint64_t end = (uint64_t)json_integer_value(json_array_get(offsets, 1));
        if (begin > end)
                return errbuf_set(e, -EBADMSG, "%s: data_offsets [%llu, %llu] begin after end", n,
                                  (unsigned long long)begin, (unsigned long long)end);
        if (end > data_len)
                return errbuf_set(e, -EBADMSG, "%s: data_offsets [%llu, %llu] exceed data area of %llu bytes", n,
                                  (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_len);
        ret_span->begin = begin;
        ret_span->end = end;
        return 0;
}

/* Checks that t's shape times the element size spans exactly sp; fills
 * t->numel and t->nbytes. */
static int entry_size(const struct errbuf *e, const char *n, const struct dtype_info *di, const struct span *sp,
                      struct st_tensor *t)
{
        char sb[8 * 24 + 4];
        int64_t numel;

        if (shape_numel(t->shape, t->ndim, &numel) < 0) {
                shape_str(t->shape, t->ndim, sb, sizeof sb);
                return errbuf_set(e, -EBADMSG, "%s: shape %s: element count overflows", n, sb);
        }
        if ((uint64_t)numel > UINT64_MAX / di->size) {
                shape_str(t->shape, t->ndim, sb, sizeof sb);
                return errbuf_set(e, -EBADMSG, "%s: shape %s x %s: byte count overflows", n, sb, di->name);
        }
        uint64_t nbytes = (uint64_t)numel * di->size;
        if (nbytes != sp->end - sp->begin) {
                shape_str(t->shape, t->ndim, sb, sizeof sb);
                return errbuf_set(e, -EBADMSG,
                                  "%s: shape %s x %s (%zu bytes) = %llu bytes, but data_offsets [%llu, %llu] span %llu",
                                  n, sb, di->name, di->size, (unsigned long long)nbytes,
                                  (unsigned long long)sp->begin, (unsigned long long)sp->end,
                                  (unsigned long long)(sp->end - sp->begin));
        }
        t->numel = numel;
        t->nbytes = (size_t)nbytes; /* <= data_len, which fits in size_t */
        return 0;
}

/* Validates one entry and fills t, except name and data; the span it
 * occupies in the data area goes to ret_span. */
static int parse_entry(const struct errbuf *e, const char *name, json_t *entry, uint64_t data_len,
                       struct st_tensor *t, struct span *ret_span)
{
        char nb[NAME_IN_MSG + 4];
        const char *n = msg_name(name, nb);
        const struct dtype_info *di = NULL;
        struct entry_fields fl = { NULL, NULL, NULL };
        struct span sp = { 0, 0, NULL };
        int r;

        if ((r = split_entry(e, n, entry, &fl)) < 0 || (r = entry_dtype(e, n, fl.dtype, &di)) < 0 ||
            (r = entry_shape(e, n, fl.shape, t)) < 0 || (r = entry_offsets(e, n, fl.offsets, data_len, &sp)) < 0 ||
            (r = entry_size(e, n, di, &sp, t)) < 0)
                return r;
        t->dtype = di->dtype;
        t->dtype_name = di->name;
        sp.t = t;
        *ret_span = sp;
        return 0;
}

static int parse_metadata(const struct errbuf *e, json_t *meta)
{
        char nb[NAME_IN_MSG + 4];
        const char *key;
        json_t *v;

        if (!json_is_object(meta))
                return errbuf_set(e, -EBADMSG, "__metadata__: not a JSON object");
        json_object_foreach(meta, key, v)
                if (!json_is_string(v))
                        return errbuf_set(e, -EBADMSG, "__metadata__: value of \"%s\" is not a string",
                                          msg_name(key, nb));
        return 0;
}

static int cmp_span(const void *a, const void *b)
{
        const struct span *x = a, *y = b;

        if (x->begin != y->begin)
                return x->begin < y->begin ? -1 : 1;
        if (x->end != y->end)
                return x->end < y->end ? -1 : 1;
        return 0;
}

static int cmp_name(const void *a, const void *b)
{
        const struct st_tensor *const *x = a, *const *y = b;

        return strcmp((*x)->name, (*y)->name);
}

/* Tensors may leave gaps but must not share a byte; empty tensors share none. */
static int check_overlap(const struct errbuf *e, struct span *spans, size_t n)
{
        char n1[NAME_IN_MSG + 4], n2[NAME_IN_MSG + 4];
        const struct span *last = NULL; /* the non-empty span reaching furthest so far */

        qsort(spans, n, sizeof *spans, cmp_span);
        for (size_t i = 0; i < n; i++) {
                const struct span *s = &spans[i];

                if (s->begin == s->end)
                        continue;
                if (last && s->begin < last->end)
                        return errbuf_set(e, -EBADMSG, "%s: data_offsets [%llu, %llu] overlap %s [%llu, %llu]",
                                          msg_name(s->t->name, n1), (unsigned long long)s->begin,
                                          (unsigned long long)s->end, msg_name(last->t->name, n2),
                                          (unsigned long long)last->begin, (unsigned long long)last->end);
                if (!last || s->end > last->end)
                        last = s;
        }
        return 0;
}

/* The header's JSON text: its length (8-byte little endian, bounded by the
 * file and ST_MAX_HEADER) and no NUL byte in it. */
static int header_text(const struct errbuf *e, const unsigned char *buf, size_t len, size_t *ret_hlen)
{
        if (len < 8)
                return errbuf_set(e, -EBADMSG, "file is %zu bytes, too short for the 8-byte header length", len);
        uint64_t hlen = load_le64(buf);
        if (hlen > len - 8)
                return errbuf_set(e, -EBADMSG, "header length %llu runs past the end of the file (%zu bytes follow)",
                                  (unsigned long long)hlen, len - 8);
        if (hlen > ST_MAX_HEADER)
                return errbuf_set(e, -E2BIG, "header length %llu exceeds the limit of %u bytes",
                                  (unsigned long long)hlen, ST_MAX_HEADER);

        const char *text = (const char *)buf + 8;
        /* JSON never holds a raw NUL, yet jansson drops one that follows a
         * number and then miscounts byte positions; refuse it up front. */
        const char *nul = memchr(text, '\0', (size_t)hlen);
        if (nul)
                return errbuf_set(e, -EBADMSG, "header JSON contains a NUL byte at byte %zu", (size_t)(nul - text) + 8);
        *ret_hlen = (size_t)hlen;
        return 0;
}

/* Parses the header text into a JSON object (a new reference). */
static int header_json(const struct errbuf *e, const char *text, size_t hlen, json_t **ret_root)
{
        json_error_t jerr;
        json_t *root = json_loadb(text, hlen, JSON_REJECT_DUPLICATES, &jerr);

        if (!root) {
                if (json_error_code(&jerr) == json_error_out_of_memory)
                        return errbuf_set(e, -ENOMEM, "header JSON: out of memory");
                if (json_error_code(&jerr) == json_error_duplicate_key) {
                        char nb[NAME_IN_MSG + 4];
                        char *dup = duplicate_key(text, hlen, (size_t)jerr.position);
                        int r;

                        if (!dup)
                                return errbuf_set(e, -EBADMSG, "header: duplicate key at byte %d", jerr.position + 8);
                        r = errbuf_set(e, -EBADMSG, "%s: duplicate key in header at byte %d", msg_name(dup, nb),
                                       jerr.position + 8);
                        free(dup);
                        return r;
                }
                return errbuf_set(e, -EBADMSG, "header is not valid JSON at byte %d: %s", jerr.position + 8, jerr.text);
        }
        if (!json_is_object(root)) {
                json_decref(root);
                return errbuf_set(e, -EBADMSG, "header is not a JSON object");
        }
        *ret_root = root;
        return 0;
}

/* A file sized for the tensors of root, with spans[n] for the overlap check. */
static int file_alloc(const struct errbuf *e, json_t *root, struct st_file **ret_file, struct span **ret_spans)
{
        size_t n = 0, names_len = 0;
        struct st_file *f;
        struct span *spans;
        const char *key;
        json_t *v;

        json_object_foreach(root, key, v) {
                if (strcmp(key, "__metadata__") == 0)
                        continue;
                n++;
                names_len += strlen(key) + 1;
        }
        if (n > ST_MAX_TENSORS)
                return errbuf_set(e, -E2BIG, "header lists %zu tensors, more than the limit of %d", n, ST_MAX_TENSORS);

        f = calloc(1, sizeof *f);
        if (!f)
                return errbuf_set(e, -ENOMEM, "out of memory");
        f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
        f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
        f->names = malloc(names_len ? names_len : 1);
        spans = calloc(n ? n : 1, sizeof *spans);
        if (!f->tensors || !f->by_name || !f->names || !spans) {
                free(spans);
                st_free(f);
                return errbuf_set(e, -ENOMEM, "out of memory for %zu tensors", n);
        }
        f->n = n;
        *ret_file = f;
        *ret_spans = spans;
        return 0;
}

/* Fills f's tensors (names, fields, data pointers) and spans from root, in
 * header order; keeps "__metadata__". */
static int fill_tensors(const struct errbuf *e, json_t *root, const unsigned char *data, uint64_t data_len,
                        struct st_file *f, struct span *spans)
{
        char *name = f->names;
        const char *key;
        size_t i = 0;
        json_t *v;
        int r;

        json_object_foreach(root, key, v) {
                struct st_tensor *t = &f->tensors[i];
                size_t kl = strlen(key);

                if (strcmp(key, "__metadata__") == 0) {
                        if ((r = parse_metadata(e, v)) < 0)
                                return r;
                        f->meta = json_incref(v);
                        continue;
                }
                memcpy(name, key, kl + 1);
                t->name = name;
                name += kl + 1;
                if ((r = parse_entry(e, key, v, data_len, t, &spans[i])) < 0)
                        return r;
                t->data = data + spans[i].begin;
                f->by_name[i] = t;
                i++;
        }
        return 0;
}

static int parse(const struct errbuf *e, const unsigned char *buf, size_t len, struct st_file **ret_file)
{
        struct st_file *f = NULL;
        struct span *spans = NULL;
        json_t *root = NULL;
        size_t hlen = 0;
        int r;

        if ((r = header_text(e, buf, len, &hlen)) < 0 ||
            (r = header_json(e, (const char *)buf + 8, hlen, &root)) < 0)
                return r;
        if ((r = file_alloc(e, root, &f, &spans)) < 0 ||
            (r = fill_tensors(e, root, buf + 8 + hlen, len - 8 - hlen, f, spans)) < 0 ||
            (r = check_overlap(e, spans, f->n)) < 0)
                goto out;
        /* Names are unique (duplicates were rejected), so the order is total. */
        qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name);

        *ret_file = f;
        f = NULL;
out:
        free(spans);
        st_free(f);
        json_decref(root);
        return r;
}

int st_parse(const void *buf, size_t len, char *err, size_t err_len, struct st_file **ret_file)
{
        const struct errbuf e = { err, err_len, NULL };

        if (!buf && len > 0)
                return errbuf_set(&e, -EINVAL, "no buffer");
        return parse(&e, buf, len, ret_file);
}

/* Reads fd (len bytes per fstat) into anonymous memory and checks that the
 * file did not change meanwhile (size and modification time). */
static int read_copy(const struct errbuf *e, int fd, const struct stat *before, size_t len, void **ret_map)
{
        char eb[128];
        struct stat after;
        size_t got = 0;
        int r;

        void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) {
                r = -errno;
                return errbuf_set(e, r, "cannot allocate %zu bytes: %s", len, strerror_r(-r, eb, sizeof eb));
        }
        while (got < len) {
                ssize_t n = pread(fd, (char *)map + got, len - got, (off_t)got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -ESTALE;
                        if (n < 0)
                                errbuf_set(e, r, "read: %s", strerror_r(-r, eb, sizeof eb));
                        else
                                errbuf_set(e, r, "the file shrank while it was read (%zu of %zu bytes)", got, len);
                        goto fail;
                }
                got += (size_t)n;
        }
        if (fstat(fd, &after) < 0 || after.st_size != before->st_size ||
            after.st_mtim.tv_sec != before->st_mtim.tv_sec || after.st_mtim.tv_nsec != before->st_mtim.tv_nsec) {
                r = errbuf_set(e, -ESTALE,
                               "the file changed while it was read; replace weights by rename, then load again");
                goto fail;
        }
        *ret_map = map;
        return 0;
fail:
        munmap(map, len);
        return r;
}

int st_open(const char *path, char *err, size_t err_len, struct st_file **ret_file)
{
        return st_open_ex(path, false, err, err_len, ret_file);
}

/* Opens path, which must be a regular file whose size fits in memory. */
static int open_regular(const struct errbuf *e, const char *path, int *ret_fd, struct stat *ret_st)
{
        struct stat st;
        char eb[128];
        int fd, r;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                return errbuf_set(e, r, "open: %s", strerror_r(-r, eb, sizeof eb));
        }
        if (fstat(fd, &st) < 0) {
                r = -errno;
                errbuf_set(e, r, "stat: %s", strerror_r(-r, eb, sizeof eb));
        } else if (!S_ISREG(st.st_mode)) {
                r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
                errbuf_set(e, r, "not a regular file");
        } else if ((uint64_t)st.st_size > SIZE_MAX) {
                r = errbuf_set(e, -E2BIG, "file of %lld bytes does not fit in memory", (long long)st.st_size);
        } else {
                *ret_fd = fd;
                *ret_st = st;
                return 0;
        }
        close(fd);
        return r;
}

/* The file's len bytes in memory: copied (see read_copy), or a private
 * read-only mapping, where weights are used in place. A file truncated by
 * someone else while mapped faults on access (SIGBUS); copy is for callers
 * that must survive that. */
static int map_bytes(const struct errbuf *e, int fd, const struct stat *st, size_t len, bool copy, void **ret_map)
{
        char eb[128];
        void *map;
        int r;

        if (copy)
                return read_copy(e, fd, st, len, ret_map);
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
                r = -errno;
                return errbuf_set(e, r, "mmap: %s", strerror_r(-r, eb, sizeof eb));
        }
        *ret_map = map;
        return 0;
}

int st_open_ex(const char *path, bool copy, char *err, size_t err_len, struct st_file **ret_file)
{
        const struct errbuf e = { err, err_len, path };
        struct st_file *f = NULL;
        struct stat st = { 0 };
        void *map = MAP_FAILED;
        size_t len;
        int fd = -1, r;

        if ((r = open_regular(&e, path, &fd, &st)) < 0)
                return r;
        len = (size_t)st.st_size;
        if (len < 8) {
                /* mmap cannot map an empty file; the parser rejects the size
                 * before it reads anything. */
                r = parse(&e, NULL, len, &f);
                goto out;
        }
        if ((r = map_bytes(&e, fd, &st, len, copy, &map)) < 0) {
                map = MAP_FAILED;
                goto out;
        }
        if ((r = parse(&e, map, len, &f)) < 0)
                goto out;
        f->map = map;
        f->map_len = len;
        map = MAP_FAILED;
        *ret_file = f;
        f = NULL;
out:
        if (map != MAP_FAILED)
                munmap(map, len);
        st_free(f);
        close(fd);
        return r;
}

struct st_file *st_free(struct st_file *f)
{
        if (!f)
                return NULL;
        if (f->map)
                munmap(f->map, f->map_len);
        free(f->tensors);
        free(f->by_name);
        free(f->names);
        json_decref(f->meta);
        free(f);
        return NULL;
}

const char *st_metadata(const struct st_file *f, const char *key)
{
        return f->meta ? json_string_value(json_object_get(f->meta, key)) : NULL;
}

size_t st_count(const struct st_file *f)
{
        return f ? f->n : 0;
}

const struct st_tensor *st_at(const struct st_file *f, size_t i)
{
        return f && i < f->n ? &f->tensors[i] : NULL;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
        size_t lo = 0, hi;

        if (!f || !name)
                return NULL;
        for (hi = f->n; lo < hi;) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(name, f->by_name[mid]->name);

                if (c == 0)
                        return f->by_name[mid];
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return NULL;
}

/* ---- conversions --------------------------------------------------------- */

static float f32_from_bits(uint32_t u)
{
        float x;

        memcpy(&x, &u, sizeof x);
        return x;
}

static uint32_t f32_bits(float x)
{
        uint32_t u;

        memcpy(&u, &x, sizeof u);
        return u;
}

/* Exact: every binary16 value, subnormals included, is a binary32 value. */
static float f16_to_f32(uint16_t h)
{
        uint32_t sign = (uint32_t)(h & 0x8000) << 16;
        uint32_t exp = (h >> 10) & 0x1f;
        uint32_t mant = h & 0x3ff;

        if (exp == 0x1f) /* inf, or NaN with its payload kept */
                return f32_from_bits(sign | 0x7f800000u | mant << 13);
        if (exp == 0) {
                if (mant == 0)
                        return f32_from_bits(sign);
                /* Subnormal mant x 2^-24: shift the leading one into the
                 * implicit bit position, lowering the exponent as we go. */
                exp = 127 - 15 + 1;
                while (!(mant & 0x400)) {
                        mant <<= 1;
                        exp--;
                }
                return f32_from_bits(sign | exp << 23 | (mant & 0x3ff) << 13);
        }
        return f32_from_bits(sign | (exp + 127 - 15) << 23 | mant << 13);
}

/* Round to nearest, ties to even; overflow goes to inf, NaN stays NaN. */
static uint16_t f32_to_f16(float x)
{
        uint32_t u = f32_bits(x);
        uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
        uint32_t a = u & 0x7fffffffu;

        if (a > 0x7f800000u) /* NaN: keep the top of the payload, force quiet */
                return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
        if (a >= 0x477ff000u) /* >= 65520, halfway from 65504 to 2^16: inf */
                return (uint16_t)(sign | 0x7c00);
        if (a < 0x38800000u) { /* below 2^-14: subnormal or zero */
                if (a <= 0x33000000u) /* <= 2^-25, half the smallest subnormal: ties to 0 */
                        return sign;
                uint32_t e = a >> 23; /* 103..112 */
                uint32_t m = (a & 0x7fffff) | 0x800000;
                uint32_t shift = 126 - e; /* value in units of 2^-24 is m >> shift */
                uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);

                if (rem > half || (rem == half && (r & 1)))
                        r++; /* may carry into the smallest normal, which is right */
                return (uint16_t)(sign | r);
        }
        uint32_t h = (a >> 13) - ((127u - 15) << 10), rem = a & 0x1fff;

        if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
                h++; /* a carry into the exponent is the correct rounding */
        return (uint16_t)(sign | h);
}

static uint16_t f32_to_bf16(float x)
{
        uint32_t u = f32_bits(x);

        if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN whose payload may sit in the dropped half */
                return (uint16_t)((u >> 16) | 0x40);
        u += 0x7fff + ((u >> 16) & 1); /* overflow of the top half lands on inf, as it should */
        return (uint16_t)(u >> 16);
}

void st_to_f32(int src_dtype, const void *src, size_t n, float *dst)
{
        const unsigned char *p = src;

        switch (src_dtype) {
        case ST_F32:
                for (size_t i = 0; i < n; i++, p += 4)
                        dst[i] = f32_from_bits((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                                               (uint32_t)p[3] << 24);
                break;
        case ST_F16:
                for (size_t i = 0; i < n; i++, p += 2)
                        dst[i] = f16_to_f32((uint16_t)(p[0] | p[1] << 8));
                break;
        case ST_BF16:
                for (size_t i = 0; i < n; i++, p += 2)
                        dst[i] = f32_from_bits((uint32_t)p[0] << 16 | (uint32_t)p[1] << 24);
                break;
        default:
                /* Not convertible: make misuse visible rather than plausible. */
                for (size_t i = 0; i < n; i++)
                        dst[i] = f32_from_bits(0x7fc00000u);
                break;
        }
}

/* ---- writer -------------------------------------------------------------- */

struct st_wentry {
        int dtype;
        size_t numel;
        const float *data; /* borrowed from the caller until save */
};

struct st_writer {
        json_t *header;           /* the header being built, in insertion order */
        struct st_wentry *entries; /* [n] in insertion order */
        size_t n, cap;
        uint64_t data_len; /* bytes laid out so far */
};

int st_writer_new(struct st_writer **ret_writer)
{
        struct st_writer *w = calloc(1, sizeof *w);

        if (!w)
                return -ENOMEM;
        w->header = json_object();
        if (!w->header) {
                free(w);
                return -ENOMEM;
        }
        *ret_writer = w;
        return 0;
}

struct st_writer *st_writer_free(struct st_writer *w)
{
        if (!w)
                return NULL;
        json_decref(w->header);
        free(w->entries);
        free(w);
        return NULL;
}

int st_writer_set_metadata(struct st_writer *w, const char *key, const char *value)
{
        json_t *meta = json_object_get(w->header, "__metadata__");
        json_t *k = key ? json_string(key) : NULL;       /* NULL if not UTF-8 */
        json_t *v = value ? json_string(value) : NULL;

        json_decref(k);
        if (!k || !v) {
                json_decref(v);
                return -EINVAL;
        }
        if (!meta) {
                meta = json_object();
                if (!meta || json_object_set_new(w->header, "__metadata__", meta) < 0) {
                        json_decref(v);
                        return -ENOMEM;
                }
        }
        return json_object_set_new(meta, key, v) < 0 ? -ENOMEM : 0;
}

/* Bytes of a tensor to add: -EINVAL for a bad name, dtype or shape, -EEXIST
 * for a name taken, -E2BIG past a limit. */
static int writer_check(const struct st_writer *w, const char *name, const struct dtype_info *di, int ndim,
                        const int64_t *shape, const float *data, uint64_t *ret_nbytes)
{
        json_t *jname;
        int64_t numel;

        if (!w || !name || !di || ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
                return -EINVAL;
        if (strcmp(name, "__metadata__") == 0)
                return -EINVAL;
        jname = json_string(name); /* NULL if name is not UTF-8 */
        if (!jname)
                return -EINVAL;
        json_decref(jname);
        if (json_object_get(w->header, name))
                return -EEXIST;
        if (w->n >= ST_MAX_TENSORS)
                return -E2BIG;
        for (int i = 0; i < ndim; i++)
                if (shape[i] < 0)
                        return -EINVAL;
        if (shape_numel(shape, ndim, &numel) < 0)
                return -E2BIG;
        if ((uint64_t)numel > SIZE_MAX / di->size || (uint64_t)numel * di->size > (uint64_t)INT64_MAX - w->data_len)
                return -E2BIG;
        if (numel > 0 && !data)
                return -EINVAL;
        *ret_nbytes = (uint64_t)numel * di->size;
        return 0;
}

static int writer_reserve(struct st_writer *w)
{
        if (w->n < w->cap)
                return 0;
        size_t cap = w->cap ? 2 * w->cap : 64;
        struct st_wentry *e = realloc(w->entries, cap * sizeof *e);

        if (!e)
                return -ENOMEM;
        w->entries = e;
        w->cap = cap;
        return 0;
}

/* The header entry {"dtype", "shape", "data_offsets"} of a tensor of nbytes
 * laid out after those added so far (a new reference). */
static int writer_entry(const struct st_writer *w, const struct dtype_info *di, int ndim, const int64_t *shape,
                        uint64_t nbytes, json_t **ret_entry)
{
        json_t *entry = json_object(), *jshape = json_array();
        json_t *joff = json_pack("[II]", (json_int_t)w->data_len, (json_int_t)(w->data_len + nbytes));
        int r = 0;

        if (!entry || !jshape || !joff)
                r = -1;
        for (int i = 0; r == 0 && i < ndim; i++)
                r = json_array_append_new(jshape, json_integer(shape[i]));
        if (r < 0) {
                json_decref(entry);
                json_decref(jshape);
                json_decref(joff);
                return -ENOMEM;
        }
        /* The _new setters take the reference even when they fail. */
        r = json_object_set_new(entry, "dtype", json_string(di->name));
        r |= json_object_set_new(entry, "shape", jshape);
        r |= json_object_set_new(entry, "data_offsets", joff);
        if (r < 0) {
                json_decref(entry);
                return -ENOMEM;
        }
        *ret_entry = entry;
        return 0;
}

int st_writer_add(struct st_writer *w, const char *name, int dtype, int ndim, const int64_t *shape,
                  const float *data)
{
        const struct dtype_info *di = dtype_of(dtype);
        json_t *entry = NULL;
        uint64_t nbytes = 0;
        int r;

        if ((r = writer_check(w, name, di, ndim, shape, data, &nbytes)) < 0 || (r = writer_reserve(w)) < 0 ||
            (r = writer_entry(w, di, ndim, shape, nbytes, &entry)) < 0)
                return r;
        if (json_object_set_new(w->header, name, entry) < 0)
                return -ENOMEM;
        w->entries[w->n++] = (struct st_wentry){ dtype, (size_t)(nbytes / di->size), data };
        w->data_len += nbytes;
        return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
        const unsigned char *p = buf;

        while (len > 0) {
                ssize_t k = write(fd, p, len);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                len -= (size_t)k;
        }
        return 0;
}

static int write_tensor(int fd, const struct st_wentry *t)
{
        unsigned char buf[1 << 16]; /* converted in chunks: the file may exceed memory twice over */
        size_t per = sizeof buf / 4, done = 0;
        int r;

        while (done < t->numel) {
                size_t k = t->numel - done < per ? t->numel - done : per, len = 0;
                const float *src = t->data + done;

                for (size_t i = 0; i < k; i++) {
                        uint32_t u = t->dtype == ST_F32 ? f32_bits(src[i])
                                     : t->dtype == ST_F16 ? f32_to_f16(src[i])
                                                          : f32_to_bf16(src[i]);
                        int bytes = t->dtype == ST_F32 ? 4 : 2;

                        for (int b = 0; b < bytes; b++)
                                buf[len++] = (unsigned char)(u >> (8 * b)); /* little endian */
                }
                r = write_all(fd, buf, len);
                if (r < 0)
                        return r;
                done += k;
        }
        return 0;
}

/* Best effort: after the rename has happened, failing to flush the directory
 * entry must not report the file as unwritten. */
static void sync_parent(const char *path)
{
        const char *slash = strrchr(path, '/');
        char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
        int fd;

        if (!dir)
                return;
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
                fsync(fd);
                close(fd);
        }
        free(dir);
}

/* The 8-byte length and the header JSON, padded with spaces (valid JSON
 * whitespace) to a multiple of 8 so that the data area starts 8-byte aligned
 * in the file and in an mmap of it. The caller frees *ret_header. */
static int writer_header(const struct errbuf *e, const struct st_writer *w, char **ret_header, size_t *ret_len)
{
        char *json = json_dumps(w->header, JSON_COMPACT | JSON_PRESERVE_ORDER), *header;
        size_t jlen, hlen;

        if (!json)
                return errbuf_set(e, -ENOMEM, "out of memory for the header");
        jlen = strlen(json);
        hlen = (jlen + 7) & ~(size_t)7;
        if (hlen > ST_MAX_HEADER) {
                free(json);
                return errbuf_set(e, -E2BIG, "header of %zu bytes exceeds the limit of %u", hlen, ST_MAX_HEADER);
        }
        header = malloc(8 + hlen);
        if (!header) {
                free(json);
                return errbuf_set(e, -ENOMEM, "out of memory");
        }
        for (int b = 0; b < 8; b++)
                header[b] = (char)(unsigned char)((uint64_t)hlen >> (8 * b));
        memcpy(header + 8, json, jlen);
        memset(header + 8 + jlen, ' ', hlen - jlen);
        free(json);
        *ret_header = header;
        *ret_len = 8 + hlen;
        return 0;
}

/* Writes the header and every tensor to fd, the temporary file tmp, and
 * flushes it to disk. */
static int writer_fill(const struct errbuf *e, const struct st_writer *w, const char *header, size_t len, int fd,
                       const char *tmp)
{
        char eb[128];
        int r;

        if (fchmod(fd, 0644) < 0) {
                r = -errno;
                return errbuf_set(e, r, "chmod %s: %s", tmp, strerror_r(-r, eb, sizeof eb));
        }
        r = write_all(fd, header, len);
        for (size_t i = 0; r >= 0 && i < w->n; i++)
                r = write_tensor(fd, &w->entries[i]);
        if (r < 0)
                return errbuf_set(e, r, "write %s: %s", tmp, strerror_r(-r, eb, sizeof eb));
        if (fsync(fd) < 0) {
                r = -errno;
                return errbuf_set(e, r, "fsync %s: %s", tmp, strerror_r(-r, eb, sizeof eb));
        }
        return 0;
}

int st_writer_save(struct st_writer *w, const char *path, char *err, size_t err_len)
{
        const struct errbuf e = { err, err_len, path };
        char *tmp = NULL, *header = NULL, eb[128];
        size_t len = 0;
        int fd = -1, r;

        if (!w || !path)
                return errbuf_set(&e, -EINVAL, "no writer or path");
        if ((r = writer_header(&e, w, &header, &len)) < 0)
                return r;
        if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
                free(header);
                return errbuf_set(&e, -ENOMEM, "out of memory");
        }
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                free(tmp); /* nothing was created: keep the cleanup from unlinking a template */
                tmp = NULL;
                errbuf_set(&e, r, "create temporary file: %s", strerror_r(-r, eb, sizeof eb));
                goto out;
        }
        if ((r = writer_fill(&e, w, header, len, fd, tmp)) < 0)
                goto out;
        r = close(fd);
        fd = -1;
        if (r < 0) {
                r = -errno;
                errbuf_set(&e, r, "close %s: %s", tmp, strerror_r(-r, eb, sizeof eb));
                goto out;
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                errbuf_set(&e, r, "rename from %s: %s", tmp, strerror_r(-r, eb, sizeof eb));
                goto out;
        }
        free(tmp);
        tmp = NULL;
        sync_parent(path);
out:
        if (fd >= 0)
                close(fd);
        if (tmp)
                unlink(tmp);
        free(tmp);
        free(header);
        return r;
}

const void *st_bytes(const struct st_file *f, size_t *ret_len)
{
        *ret_len = f->map ? f->map_len : 0;
        return f->map;
}

void st_drop_bytes(struct st_file *f)
{
        if (f->map)
                munmap(f->map, f->map_len);
        f->map = NULL;
        f->map_len = 0;
}

/* safetensors: read-only mmap of a .safetensors file with a fully validated
 * header, and a writer for the same format. Pure: no oneDNN, no globals.
 *
 * Usage:
 *   char err[256];
 *   struct st_file *f = NULL;
 *   if (st_open("model.safetensors", err, sizeof err, &f) < 0) die("%s", err);
 *   const struct st_tensor *t = st_find(f, "conv_stem.weight");
 *   if (t && t->dtype == ST_F32) use((const float *)t->data, t->shape, t->ndim);
 *   f = st_free(f);
 */
#ifndef EFFNET_SAFETENSORS_H
#define EFFNET_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_F32 = 0, ST_F16 = 1, ST_BF16 = 2, ST_OTHER = 3 };

#define ST_MAX_DIMS 8
/* Limits against hostile files, checked before the header is parsed:
 * jansson's tree of a JSON text takes up to some 80 bytes per byte (`{},`),
 * so the header length bounds what a parse can take (at most about 90 MB
 * at this cap), whatever the file is. The largest header of the family,
 * EfficientNetV2-XL with a 21843-class head, lists 1713 tensors in 176 KB
 * (torchvision's names; timm's take 166 KB): 1 MiB leaves six times that.
 * The format's own limit, 100 MB, would let a file take gigabytes. */
#define ST_MAX_HEADER (1u * 1024 * 1024) /* header JSON bytes */
/* XL has 1713 tensors; a header of 1 MiB holds about 18000 of the shortest. */
#define ST_MAX_TENSORS 10000

struct st_tensor {
        const char *name;          /* owned by the file */
        int dtype;                 /* enum st_dtype; ST_OTHER for I64 etc. */
        const char *dtype_name;    /* as in the header: "F32", "I64", ... */
        int ndim;
        int64_t shape[ST_MAX_DIMS];
        int64_t numel;
        const void *data;          /* into the mmap; unaligned in general */
        size_t nbytes;
};

struct st_file;

/* Maps path and validates: header length (8-byte LE, bounded by the file and
 * ST_MAX_HEADER), JSON object, per tensor: exactly the fields dtype, shape and
 * data_offsets, dtype known, shape non-negative, numel x element size ==
 * end - begin (overflow checked), offsets inside the data area, no overlap
 * between tensors (gaps are allowed), no duplicate keys. "__metadata__"
 * (string map) is accepted and skipped. Every error message starts with path
 * and names the tensor and the problem, e.g. "m.safetensors: conv_stem.weight:
 * data_offsets [0, 100] exceed data area of 64 bytes".
 * Returns the errno of open/fstat/mmap (-ENOENT, -EACCES, -EISDIR, ...),
 * -EBADMSG (malformed), -E2BIG (limits: header size, tensor count, ndim),
 * -ENOMEM. The file is immutable once opened: any number of threads may read
 * it; it owns the mapping, names and tensors until st_free. */
int st_open(const char *path, char *err, size_t err_len, struct st_file **ret_file);
/* With copy, the file is read into anonymous memory instead of mapped, and
 * -ESTALE is returned if it changed (size, mtime) while being read: a file
 * rewritten in place cannot fault the process later. */
int st_open_ex(const char *path, bool copy, char *err, size_t err_len, struct st_file **ret_file);
/* The whole file as mapped or copied (NULL for st_parse buffers). */
const void *st_bytes(const struct st_file *f, size_t *ret_len);
/* Unmaps the file (st_open, st_open_ex): tensor data must not be read
 * afterwards; names, shapes and dtypes stay. */
void st_drop_bytes(struct st_file *f);
/* Same checks on a buffer the caller keeps alive and unchanged until st_free
 * (fuzzing, tests); tensor data point into buf. Messages carry no path. */
int st_parse(const void *buf, size_t len, char *err, size_t err_len,
             struct st_file **ret_file);
struct st_file *st_free(struct st_file *f); /* accepts NULL, returns NULL */

size_t st_count(const struct st_file *f);
/* The value of key in "__metadata__", owned by f; NULL when absent. */
const char *st_metadata(const struct st_file *f, const char *key);
const struct st_tensor *st_at(const struct st_file *f, size_t i); /* file order of the header */
const struct st_tensor *st_find(const struct st_file *f, const char *name); /* NULL if absent; O(log n) */

/* Converts n little-endian elements of dtype src_dtype at src (any
 * alignment) to float. Exact for F32, F16 (subnormals, inf, NaN payloads)
 * and BF16. ST_OTHER cannot be converted and yields NaN. */
void st_to_f32(int src_dtype, const void *src, size_t n, float *dst);

/* Writing: tensors are float32 in memory, stored as dtype (F32, F16, BF16
 * rounded to nearest even; overflow to inf, NaN stays NaN). Header keys and
 * data are laid out in the order added; the header is padded with spaces so
 * that the data start 8-byte aligned. One writer per thread. */
struct st_writer;
int st_writer_new(struct st_writer **ret_writer);
/* Copies name and shape; data must stay valid until st_writer_save. dtype is
 * ST_F32, ST_F16 or ST_BF16. Returns -EINVAL (bad dtype, ndim, shape, NULL
 * data, name not UTF-8 or "__metadata__"), -EEXIST (name already added),
 * -E2BIG (too many tensors, size overflow), -ENOMEM. */
int st_writer_add(struct st_writer *w, const char *name, int dtype, int ndim,
                  const int64_t *shape, const float *data);
/* Writes a temporary file next to path and renames it over path: readers see
 * the old file or the whole new one. Mode 0644. Returns the errno of the
 * failing call, -E2BIG if the header exceeds ST_MAX_HEADER, or -ENOMEM; the
 * message names path. */
/* Sets "__metadata__"[key] = value (both copied, UTF-8). Called before the
 * first st_writer_add, the map comes first in the header, as the format's
 * other writers put it. -EINVAL (NULL or not UTF-8), -ENOMEM. */
int st_writer_set_metadata(struct st_writer *w, const char *key, const char *value);
int st_writer_save(struct st_writer *w, const char *path, char *err, size_t err_len);
struct st_writer *st_writer_free(struct st_writer *w); /* accepts NULL, returns NULL */

#endif

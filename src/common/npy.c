/* npy: read and write NumPy .npy files of float32 (little-endian, C order). */
#include "npy.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Finds the value that follows 'key': in a header dict, or NULL. */
static const char *dict_value(const char *hdr, const char *key)
{
        char pat[32];
        snprintf(pat, sizeof pat, "'%s':", key);
        const char *p = strstr(hdr, pat);
        if (!p)
                return NULL;
        p += strlen(pat);
        while (*p == ' ')
                p++;
        return p;
}

/* The header dict of an open .npy file (versions 1 to 3), NUL-terminated;
 * the caller frees *ret_hdr. */
static int read_header(FILE *f, const char *path, char *err, size_t err_len, char **ret_hdr)
{
        unsigned char pre[12];
        size_t hlen;
        char *hdr;

        if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0)
                return err_set(err, err_len, -EBADMSG, "%s: not a .npy file", path);
        if (pre[6] == 1) {
                hlen = pre[8] | (size_t)pre[9] << 8;
        } else if (pre[6] == 2 || pre[6] == 3) {
                if (fread(pre + 10, 1, 2, f) != 2)
                        return err_set(err, err_len, -EBADMSG, "%s: truncated header", path);
                hlen = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        } else {
                return err_set(err, err_len, -EBADMSG, "%s: unsupported .npy version %d", path, pre[6]);
        }
        if (hlen > 1 << 20)
                return err_set(err, err_len, -E2BIG, "%s: header of %zu bytes", path, hlen);
        hdr = malloc(hlen + 1);
        if (!hdr)
                return -ENOMEM;
        if (fread(hdr, 1, hlen, f) != hlen) {
                free(hdr);
                return err_set(err, err_len, -EBADMSG, "%s: truncated header", path);
        }
        hdr[hlen] = 0;
        *ret_hdr = hdr;
        return 0;
}

/* The tuple v points at, "(d0, d1, ...)": at most max_dims (and 16)
 * non-negative dimensions of at most NPY_MAX_BYTES of float32 in all. */
static int parse_shape(const char *v, const char *path, int max_dims, char *err, size_t err_len,
                       int *ret_ndim, int64_t ret_shape[16], size_t *ret_numel)
{
        int64_t shape[16];
        size_t numel = 1;
        int ndim = 0;

        if (!v || *v != '(')
                return err_set(err, err_len, -EBADMSG, "%s: no shape", path);
        for (v++;;) {
                while (*v == ' ' || *v == ',')
                        v++;
                if (*v == ')')
                        break;
                char *end;
                long long d = strtoll(v, &end, 10);
                if (end == v || d < 0 || ndim >= max_dims || ndim >= 16)
                        return err_set(err, err_len, -EBADMSG, "%s: bad shape (at most %d dims)", path, max_dims);
                shape[ndim++] = d;
                if (d > 0 && numel > NPY_MAX_BYTES / 4 / (size_t)d)
                        return err_set(err, err_len, -E2BIG, "%s: array too large", path);
                numel *= (size_t)d;
                v = end;
        }
        *ret_ndim = ndim;
        memcpy(ret_shape, shape, sizeof(int64_t) * (size_t)ndim);
        *ret_numel = numel;
        return 0;
}

/* Only little-endian float32 in C order is read. */
static int check_dtype(const char *hdr, const char *path, char *err, size_t err_len)
{
        const char *v = dict_value(hdr, "descr");

        if (!v || strncmp(v, "'<f4'", 5) != 0)
                return err_set(err, err_len, -EBADMSG, "%s: dtype must be float32 '<f4'", path);
        v = dict_value(hdr, "fortran_order");
        if (!v || strncmp(v, "False", 5) != 0)
                return err_set(err, err_len, -EBADMSG, "%s: fortran_order must be False", path);
        return 0;
}

int npy_read_f32(const char *path, int max_dims, char *err, size_t err_len,
                 float **ret_data, int *ret_ndim, int64_t *ret_shape)
{
        FILE *f = fopen(path, "rb");
        char *hdr = NULL;
        float *data = NULL;
        int64_t shape[16];
        int ndim = 0, r;
        size_t numel = 0;

        if (!f)
                return err_set(err, err_len, -errno, "%s: %s", path, strerror(errno));
        if ((r = read_header(f, path, err, err_len, &hdr)) < 0 || (r = check_dtype(hdr, path, err, err_len)) < 0 ||
            (r = parse_shape(dict_value(hdr, "shape"), path, max_dims, err, err_len, &ndim, shape, &numel)) < 0)
                goto out;
        data = malloc(numel ? numel * sizeof(float) : 1);
        if (!data) {
                r = -ENOMEM;
                goto out;
        }
        if (fread(data, sizeof(float), numel, f) != numel) {
                r = err_set(err, err_len, -EBADMSG, "%s: data shorter than shape", path);
                goto out;
        }
        *ret_data = data;
        data = NULL;
        *ret_ndim = ndim;
        memcpy(ret_shape, shape, sizeof(int64_t) * (size_t)ndim);
out:
        free(data);
        free(hdr);
        fclose(f);
        return r;
}

int npy_write_f32(const char *path, const float *data, int ndim,
                  const int64_t *shape, char *err, size_t err_len)
{
        char dict[256];
        size_t numel = 1;
        int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");

        for (int i = 0; i < ndim; i++) {
                len += snprintf(dict + len, sizeof dict - (size_t)len, "%lld%s", (long long)shape[i],
                                ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
                numel *= (size_t)shape[i];
        }
        len += snprintf(dict + len, sizeof dict - (size_t)len, "), }");
        /* Pad so that magic + len + header is a multiple of 64, ending in \n. */
        int total = 10 + len + 1;
        int pad = (64 - total % 64) % 64;

        FILE *f = fopen(path, "wb");
        if (!f)
                return err_set(err, err_len, -errno, "%s: %s", path, strerror(errno));
        unsigned hl = (unsigned)(len + pad + 1);
        unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff),
                                  (unsigned char)(hl >> 8) };
        int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)len, f) == (size_t)len;
        for (int i = 0; ok && i < pad; i++)
                ok = fputc(' ', f) != EOF;
        ok = ok && fputc('\n', f) != EOF && fwrite(data, sizeof(float), numel, f) == numel;
        if (fclose(f) != 0)
                ok = 0;
        if (!ok)
                return err_set(err, err_len, -EIO, "%s: write failed", path);
        return 0;
}

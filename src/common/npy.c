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

int npy_read_f32(const char *path, int max_dims, char *err, size_t err_len,
                 float **ret_data, int *ret_ndim, int64_t *ret_shape)
{
        FILE *f = fopen(path, "rb");
        unsigned char pre[12];
        char *hdr = NULL;
        float *data = NULL;
        int64_t shape[16];
        int ndim = 0, r;
        size_t hlen, numel = 1;

        if (!f)
                return err_set(err, err_len, -errno, "%s: %s", path, strerror(errno));
        if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
                r = err_set(err, err_len, -EBADMSG, "%s: not a .npy file", path);
                goto out;
        }
        if (pre[6] == 1) {
                hlen = pre[8] | (size_t)pre[9] << 8;
        } else if (pre[6] == 2 || pre[6] == 3) {
                if (fread(pre + 10, 1, 2, f) != 2) {
                        r = err_set(err, err_len, -EBADMSG, "%s: truncated header", path);
                        goto out;
                }
                hlen = pre[8] | (size_t)pre[9] << 8 | (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        } else {
                r = err_set(err, err_len, -EBADMSG, "%s: unsupported .npy version %d", path, pre[6]);
                goto out;
        }
        if (hlen > 1 << 20) {
                r = err_set(err, err_len, -E2BIG, "%s: header of %zu bytes", path, hlen);
                goto out;
        }
        hdr = malloc(hlen + 1);
        if (!hdr) {
                r = -ENOMEM;
                goto out;
        }
        if (fread(hdr, 1, hlen, f) != hlen) {
                r = err_set(err, err_len, -EBADMSG, "%s: truncated header", path);
                goto out;
        }
        hdr[hlen] = 0;

        const char *v = dict_value(hdr, "descr");
        if (!v || strncmp(v, "'<f4'", 5) != 0) {
                r = err_set(err, err_len, -EBADMSG, "%s: dtype must be float32 '<f4'", path);
                goto out;
        }
        v = dict_value(hdr, "fortran_order");
        if (!v || strncmp(v, "False", 5) != 0) {
                r = err_set(err, err_len, -EBADMSG, "%s: fortran_order must be False", path);
                goto out;
        }
        v = dict_value(hdr, "shape");
        if (!v || *v != '(') {
                r = err_set(err, err_len, -EBADMSG, "%s: no shape", path);
                goto out;
        }
        for (v++;;) {
                while (*v == ' ' || *v == ',')
                        v++;
                if (*v == ')')
                        break;
                char *end;
                long long d = strtoll(v, &end, 10);
                if (end == v || d < 0 || ndim >= max_dims || ndim >= 16) {
                        r = err_set(err, err_len, -EBADMSG, "%s: bad shape (at most %d dims)", path, max_dims);
                        goto out;
                }
                shape[ndim++] = d;
                if (d > 0 && numel > NPY_MAX_BYTES / 4 / (size_t)d) {
                        r = err_set(err, err_len, -E2BIG, "%s: array too large", path);
                        goto out;
                }
                numel *= (size_t)d;
                v = end;
        }
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
        r = 0;
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

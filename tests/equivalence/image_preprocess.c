/* image_preprocess: runs the image module on one file and writes the result
 * as .npy, for comparison with PIL + torchvision (image_pil.py).
 *
 *   image_preprocess [--size N] [--resize bilinear|bicubic]
 *                    [--crop center|squash] [--crop-pct P]
 *                    [--mean a,b,c] [--std a,b,c] [--fast [--margin M]]
 *                    IN OUT.npy
 *   image_preprocess --decode IN OUT.npy
 *
 * Default: float32 [3][N][N]. --decode: the decoded RGB, uint8 [H][W][3].
 * --fast decodes JPEGs at a reduced DCT scale whose sides stay at least
 * M times the resize target (default: img_prepare's IMG_JPEG_FAST_MARGIN).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"

static int read_file(const char *path, uint8_t **ret_buf, size_t *ret_len)
{
        FILE *f = fopen(path, "rb");
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0;

        if (!f)
                return -errno;
        for (;;) {
                if (len == cap) {
                        uint8_t *nb;
                        cap = cap ? cap * 2 : 1 << 16;
                        nb = realloc(buf, cap);
                        if (!nb) {
                                free(buf);
                                fclose(f);
                                return -ENOMEM;
                        }
                        buf = nb;
                }
                size_t n = fread(buf + len, 1, cap - len, f);
                if (n == 0)
                        break;
                len += n;
        }
        fclose(f);
        *ret_buf = buf;
        *ret_len = len;
        return 0;
}

/* NumPy .npy v1.0: magic, header length, a dict padded with spaces to a
 * multiple of 64 bytes and ended by a newline, then the raw data. */
static int write_npy(const char *path, const char *descr, const int *shape, int ndim,
                     const void *data, size_t bytes)
{
        char dict[192], dims[96] = "";
        size_t dl, hl;
        FILE *f;
        int ok;

        for (int i = 0; i < ndim; i++)
                snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%d, ", shape[i]);
        if (ndim > 1)
                dims[strlen(dims) - 2] = '\0'; /* (3, H, W) has no trailing comma */
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                 descr, dims);
        dl = strlen(dict);
        hl = ((10 + dl + 1 + 63) / 64) * 64 - 10;
        f = fopen(path, "wb");
        if (!f)
                return -errno;
        fwrite("\x93NUMPY\x01\x00", 1, 8, f);
        fputc((int)(hl & 0xff), f);
        fputc((int)(hl >> 8), f);
        fwrite(dict, 1, dl, f);
        for (size_t i = dl; i < hl - 1; i++)
                fputc(' ', f);
        fputc('\n', f);
        fwrite(data, 1, bytes, f);
        ok = !ferror(f);
        if (fclose(f) != 0 || !ok)
                return -EIO;
        return 0;
}

static int parse3(const char *s, float v[3])
{
        return sscanf(s, "%f,%f,%f", &v[0], &v[1], &v[2]) == 3 ? 0 : -EINVAL;
}

int main(int argc, char **argv)
{
        struct effnet_preproc pp = {
                .size = 224, .resize = EFFNET_RESIZE_BILINEAR, .crop = EFFNET_CROP_CENTER,
                .crop_pct = 1.0f, .mean = { 0.485f, 0.456f, 0.406f },
                .std = { 0.229f, 0.224f, 0.225f },
        };
        struct img_opts opts = IMG_OPTS_DEFAULT;
        const char *in = NULL, *outp = NULL;
        int decode_only = 0, margin = 0, r;
        char err[256] = "";
        uint8_t *buf = NULL;
        size_t len = 0;
        float *out = NULL;

        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!strcmp(a, "--decode")) {
                        decode_only = 1;
                } else if (!strcmp(a, "--fast")) {
                        opts.jpeg_fast = true;
                } else if (v && !strcmp(a, "--margin")) {
                        margin = atoi(v), i++;
                } else if (v && !strcmp(a, "--size")) {
                        pp.size = atoi(v), i++;
                } else if (v && !strcmp(a, "--crop-pct")) {
                        pp.crop_pct = strtof(v, NULL), i++;
                } else if (v && !strcmp(a, "--resize")) {
                        pp.resize = !strcmp(v, "bicubic") ? EFFNET_RESIZE_BICUBIC : EFFNET_RESIZE_BILINEAR;
                        i++;
                } else if (v && !strcmp(a, "--crop")) {
                        pp.crop = !strcmp(v, "squash") ? EFFNET_CROP_SQUASH : EFFNET_CROP_CENTER;
                        i++;
                } else if (v && !strcmp(a, "--mean")) {
                        if (parse3(v, pp.mean) < 0)
                                goto usage;
                        i++;
                } else if (v && !strcmp(a, "--std")) {
                        if (parse3(v, pp.std) < 0)
                                goto usage;
                        i++;
                } else if (a[0] != '-' && !in) {
                        in = a;
                } else if (a[0] != '-' && !outp) {
                        outp = a;
                } else {
                        goto usage;
                }
        }
        if (!in || !outp)
                goto usage;
        r = read_file(in, &buf, &len);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", in, strerror(-r));
                return 1;
        }

        if (decode_only) {
                struct img_rgb *img = NULL;
                r = img_decode(buf, len, &opts.limits, 0, 0, err, sizeof err, &img);
                if (r == 0) {
                        int shape[3] = { img->height, img->width, 3 };
                        r = write_npy(outp, "|u1", shape, 3, img->pixels,
                                      (size_t)img->width * img->height * 3);
                        img_rgb_free(img);
                }
        } else {
                int shape[3] = { 3, pp.size, pp.size };
                size_t n = (size_t)3 * pp.size * pp.size;

                out = malloc(sizeof(float) * (n ? n : 1));
                if (!out)
                        return 1;
                if (opts.jpeg_fast && margin > 0) {
                        /* The fast path with another margin than img_prepare's. */
                        struct img_info info;
                        struct img_geometry g;
                        struct img_rgb *img = NULL;
                        r = img_probe(buf, len, &opts.limits, err, sizeof err, &info);
                        if (r == 0)
                                r = img_plan(&pp, info.width, info.height, &g);
                        if (r == 0)
                                r = img_decode(buf, len, &opts.limits, margin * g.resize_width,
                                               margin * g.resize_height, err, sizeof err, &img);
                        if (r == 0)
                                r = img_preprocess(img, &pp, out, err, sizeof err);
                        img_rgb_free(img);
                } else {
                        r = img_prepare(buf, len, &opts, &pp, out, err, sizeof err);
                }
                if (r == 0)
                        r = write_npy(outp, "<f4", shape, 3, out, n * sizeof(float));
        }
        free(out);
        free(buf);
        if (r < 0) {
                fprintf(stderr, "%s: %s (%s)\n", in, err[0] ? err : "failed", strerror(-r));
                return 1;
        }
        return 0;
usage:
        fprintf(stderr, "usage: image_preprocess [--size N] [--resize bilinear|bicubic] "
                        "[--crop center|squash] [--crop-pct P] [--mean a,b,c] [--std a,b,c] "
                        "[--fast [--margin M]] | --decode  IN OUT.npy\n");
        return 2;
}

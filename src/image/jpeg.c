/* jpeg: JPEG decoding through TurboJPEG, the only file that sees turbojpeg.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "common/util.h"
#include "image/image.h"
#include "image/internal.h"

/* Whether the stream reaches its EOI marker. Walks marker segments by their
 * lengths as libjpeg's marker reader does; entropy-coded data, stuffed
 * FF 00, RSTn and fill bytes are skipped by the search for the next FF xx.
 * libjpeg-turbo only warns when the data end early (it pads them with a
 * fake EOI and gray pixels); PIL reports such a file as truncated, and so
 * do we. */
static bool jpeg_reaches_eoi(const uint8_t *p, size_t n)
{
        size_t i = 2; /* past SOI */

        for (;;) {
                uint8_t m;
                size_t seg;

                while (i < n && p[i] != 0xFF)
                        i++;
                while (i < n && p[i] == 0xFF)
                        i++;
                if (i >= n)
                        return false;
                m = p[i++];
                if (m == 0xD9)
                        return true;
                if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8))
                        continue; /* stuffed byte or a marker without a length */
                if (n - i < 2)
                        return false;
                seg = (size_t)p[i] << 8 | p[i + 1];
                if (seg < 2 || seg > n - i)
                        return false;
                i += seg;
        }
}

int img_jpeg_header(const void *data, size_t len, char *err, size_t err_len,
                    int *ret_width, int *ret_height)
{
        tjhandle tj = tjInitDecompress();
        int w = 0, h = 0, subsamp, cs, r = 0;

        if (!tj)
                return err_set(err, err_len, -ENOMEM, "JPEG: cannot create a decoder");
        if (tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h, &subsamp, &cs) < 0)
                r = err_set(err, err_len, -EBADMSG, "JPEG header: %s", tjGetErrorStr2(tj));
        else if (w < 1 || h < 1)
                r = err_set(err, err_len, -EBADMSG, "JPEG header: no image");
        tjDestroy(tj);
        if (r < 0)
                return r;
        *ret_width = w;
        *ret_height = h;
        return 0;
}

/* Largest of 1/2, 1/4 that keeps both sides at least min_w x min_h, or 1.
 * Not 1/8: libjpeg-turbo 2.1's DC-only IDCT can read coefficients it never
 * set on malformed streams, even ones it raises no warning about (found by
 * fuzzing under valgrind); and 1/8 rarely applies to a model's input. */
static int pick_reduce(int w, int h, int min_w, int min_h)
{
        if (min_w < 1 || min_h < 1)
                return 1;
        for (int r = 4; r >= 2; r /= 2)
                if ((w + r - 1) / r >= min_w && (h + r - 1) / r >= min_h)
                        return r;
        return 1;
}

/* PIL reads CMYK JPEGs with Adobe's inverted polarity ("CMYK;I") and converts
 * with R = (255 - K) - (C * (255 - K)) / 255 (rounded as MULDIV255), where
 * C, K are the un-inverted values, i.e. 255 minus the decoded samples.
 * In place: 4 bytes per pixel in, 3 out. */
static void cmyk_to_rgb(uint8_t *px, size_t n)
{
        const uint8_t *in = px;
        uint8_t *out = px;

        for (size_t i = 0; i < n; i++, in += 4, out += 3) {
                int nk = in[3];
                for (int c = 0; c < 3; c++) {
                        int t = (255 - in[c]) * nk + 128;
                        int v = nk - (((t >> 8) + t) >> 8);
                        out[c] = (uint8_t)(v < 0 ? 0 : v);
                }
        }
}

/* Decodes at 1/reduce scale into a new image. Returns 0 for a clean stream,
 * 1 for one with recoverable corruption (decoded, as PIL would), or a
 * negative code. */
static int decode_scaled(const void *data, size_t len, int w, int h, int cs, int reduce,
                         char *err, size_t err_len, struct img_rgb **ret_img)
{
        int sw = (w + reduce - 1) / reduce; /* TJSCALED with 1/reduce */
        int sh = (h + reduce - 1) / reduce;
        int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
        int pf = cmyk ? TJPF_CMYK : TJPF_RGB;
        struct img_rgb *img = NULL;
        tjhandle tj = NULL;
        int r = 0;

        img = img_rgb_alloc(sw, sh, cmyk ? 4 : 3);
        tj = tjInitDecompress();
        if (!img || !tj) {
                r = err_set(err, err_len, -ENOMEM, "JPEG: out of memory for %dx%d", sw, sh);
                goto fail;
        }
        img->reduce = reduce;
        img->full_width = w;
        img->full_height = h;

        /* Default flags: the islow IDCT and fancy upsampling, as PIL. The
         * first pass stops at the first warning, so that a clean stream (the
         * usual case) is decoded once and its outcome is unambiguous. */
        if (tjDecompress2(tj, data, (unsigned long)len, img->pixels, sw, 0, sh, pf,
                          TJFLAG_LIMITSCANS | TJFLAG_STOPONWARNING) < 0) {
                char first[256]; /* libjpeg messages are shorter */

                if (tjGetErrorCode(tj) != TJERR_WARNING) {
                        r = err_set(err, err_len, -EBADMSG, "JPEG: %s", tjGetErrorStr2(tj));
                        goto fail;
                }
                /* Data that end before the image does: PIL fails them as
                 * truncated, and so do we. */
                if (!jpeg_reaches_eoi(data, len)) {
                        r = err_set(err, err_len, -EBADMSG,
                                    "JPEG: truncated (data end before the EOI marker)");
                        goto fail;
                }
                /* Corrupt data libjpeg recovers from (it warns and goes on)
                 * are accepted, as by PIL, unless a fatal error follows.
                 * TurboJPEG's error code stays "warning" once one was
                 * raised, but its message is the first warning's unless a
                 * fatal error replaced it: decode again, without stopping,
                 * on a fresh handle, and compare. */
                snprintf(first, sizeof first, "%s", tjGetErrorStr2(tj));
                tjDestroy(tj);
                tj = tjInitDecompress();
                if (!tj) {
                        r = err_set(err, err_len, -ENOMEM, "JPEG: cannot create a decoder");
                        goto fail;
                }
                if (tjDecompress2(tj, data, (unsigned long)len, img->pixels, sw, 0, sh, pf,
                                  TJFLAG_LIMITSCANS) < 0 &&
                    (tjGetErrorCode(tj) != TJERR_WARNING ||
                     strcmp(tjGetErrorStr2(tj), first) != 0)) {
                        r = err_set(err, err_len, -EBADMSG, "JPEG: %s", tjGetErrorStr2(tj));
                        goto fail;
                }
                r = 1;
        }
        if (cmyk) {
                uint8_t *shrunk;

                cmyk_to_rgb(img->pixels, (size_t)sw * (size_t)sh);
                shrunk = realloc(img->pixels, (size_t)sw * (size_t)sh * 3);
                if (shrunk)
                        img->pixels = shrunk;
        }
        tjDestroy(tj);
        *ret_img = img;
        return r;
fail:
        img_rgb_free(img);
        if (tj)
                tjDestroy(tj);
        return r;
}

int img_decode_jpeg(const void *data, size_t len, const struct img_limits *limits,
                    int min_width, int min_height, char *err, size_t err_len,
                    struct img_rgb **ret_img)
{
        static const struct img_limits default_limits = IMG_LIMITS_DEFAULT;
        const struct img_limits *lim = limits ? limits : &default_limits;
        struct img_rgb *img = NULL;
        tjhandle tj;
        /* TurboJPEG may succeed without setting the size (a tables-only
         * stream); 0 then fails the size check as malformed. */
        int w = 0, h = 0, subsamp = -1, cs = -1, reduce, r;

        if (!data || len == 0)
                return err_set(err, err_len, -EBADMSG, "JPEG: empty");
        if (len > lim->max_bytes)
                return err_set(err, err_len, -E2BIG,
                               "image of %zu bytes exceeds the limit of %zu bytes",
                               len, lim->max_bytes);
        tj = tjInitDecompress();
        if (!tj)
                return err_set(err, err_len, -ENOMEM, "JPEG: cannot create a decoder");
        r = tjDecompressHeader3(tj, data, (unsigned long)len, &w, &h, &subsamp, &cs);
        if (r < 0)
                err_set(err, err_len, -EBADMSG, "JPEG header: %s", tjGetErrorStr2(tj));
        tjDestroy(tj);
        if (r < 0)
                return -EBADMSG;
        r = img_check_dims(lim, "JPEG", w, h, err, err_len);
        if (r < 0)
                return r;

        reduce = pick_reduce(w, h, min_width, min_height);
        r = decode_scaled(data, len, w, h, cs, reduce, err, err_len, &img);
        if (r == 1 && reduce > 1) {
                /* A damaged stream is decoded at full size, the path PIL
                 * takes, where libjpeg-turbo's output is best exercised. */
                img = img_rgb_free(img);
                r = decode_scaled(data, len, w, h, cs, 1, err, err_len, &img);
        }
        if (r < 0)
                return r;
        *ret_img = img;
        return 0;
}

/* jpeg: JPEG decoding through libjpeg-turbo (TurboJPEG for headers, libjpeg
 * for pixels), the only file that sees turbojpeg.h and jpeglib.h. */
#include <errno.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
/* after stdio.h, which it needs */
#include <jpeglib.h>

#include "util.h"
#include "image.h"
#include "internal.h"

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

/* TurboJPEG's TJFLAG_LIMITSCANS bound: a progressive stream of many scans
 * costs a full pass each (a decompression bomb). */
#define JPEG_MAX_SCANS 500

/* libjpeg's error manager, ours: fatal errors jump back with their
 * message; warnings (recoverable corruption) are counted, the first one
 * kept; nothing is printed. */
struct jpeg_err {
        struct jpeg_error_mgr mgr;
        jmp_buf jump;
        int warnings;
        char fatal[JMSG_LENGTH_MAX];
};

static void on_error_exit(j_common_ptr cinfo)
{
        struct jpeg_err *e = (struct jpeg_err *)cinfo->err;

        cinfo->err->format_message(cinfo, e->fatal);
        longjmp(e->jump, 1);
}

static void on_emit_message(j_common_ptr cinfo, int level)
{
        struct jpeg_err *e = (struct jpeg_err *)cinfo->err;

        if (level < 0)
                e->warnings++;
}

static void on_output_message(j_common_ptr cinfo)
{
        (void)cinfo;
}

static void on_progress(j_common_ptr cinfo)
{
        struct jpeg_err *e = (struct jpeg_err *)cinfo->err;

        if (cinfo->is_decompressor && ((j_decompress_ptr)cinfo)->input_scan_number > JPEG_MAX_SCANS) {
                snprintf(e->fatal, sizeof e->fatal, "Progressive JPEG image has more than %d scans",
                         JPEG_MAX_SCANS);
                longjmp(e->jump, 1);
        }
}

static atomic_ullong decode_passes;

unsigned long long img_jpeg_decode_passes(void)
{
        return atomic_load(&decode_passes);
}

/* A new image of ch bytes a pixel for a decode of w x h at 1/reduce, and
 * the row pointers libjpeg writes through. */
static int scaled_alloc(int w, int h, int reduce, int ch, char *err, size_t err_len,
                        struct img_rgb **ret_img, JSAMPROW **ret_rows)
{
        int sw = (w + reduce - 1) / reduce; /* libjpeg's scaled size: ceil(w / reduce) */
        int sh = (h + reduce - 1) / reduce;
        struct img_rgb *img = img_rgb_alloc(sw, sh, ch);
        JSAMPROW *rows = malloc(sizeof *rows * (size_t)sh);

        if (!img || !rows) {
                free(rows);
                img_rgb_free(img);
                return err_set(err, err_len, -ENOMEM, "JPEG: out of memory for %dx%d", sw, sh);
        }
        img->reduce = reduce;
        img->full_width = w;
        img->full_height = h;
        for (int y = 0; y < sh; y++)
                rows[y] = img->pixels + (size_t)y * (size_t)sw * (size_t)ch;
        *ret_img = img;
        *ret_rows = rows;
        return 0;
}

/* One pass of libjpeg at 1/reduce scale into rows, which hold sw x sh
 * pixels of RGB (or of CMYK when cmyk). The part libjpeg may leave by
 * longjmp: what the jump back may free is the caller's, set before it.
 * Returns 0 and the count of warnings, or -EBADMSG. */
static int libjpeg_read(const void *data, size_t len, bool cmyk, int reduce, int sw, int sh, JSAMPROW *rows,
                        char *err, size_t err_len, int *ret_warnings)
{
        int ch = cmyk ? 4 : 3;
        struct jpeg_decompress_struct d;
        struct jpeg_progress_mgr progress = { .progress_monitor = on_progress };
        struct jpeg_err e = { .warnings = 0 };

        d.err = jpeg_std_error(&e.mgr);
        e.mgr.error_exit = on_error_exit;
        e.mgr.emit_message = on_emit_message;
        e.mgr.output_message = on_output_message;
        if (setjmp(e.jump)) {
                jpeg_destroy_decompress(&d);
                return err_set(err, err_len, -EBADMSG, "JPEG: %s", e.fatal);
        }
        jpeg_create_decompress(&d);
        d.progress = &progress;
        atomic_fetch_add(&decode_passes, 1);
        jpeg_mem_src(&d, data, (unsigned long)len);
        jpeg_read_header(&d, TRUE);
        d.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
        d.scale_num = 1;
        d.scale_denom = (unsigned)reduce;
        jpeg_start_decompress(&d);
        if ((int)d.output_width != sw || (int)d.output_height != sh || d.output_components != ch) {
                jpeg_destroy_decompress(&d);
                return err_set(err, err_len, -EBADMSG, "JPEG: the stream's size changed after its header");
        }
        while (d.output_scanline < d.output_height)
                jpeg_read_scanlines(&d, rows + d.output_scanline, d.output_height - d.output_scanline);
        jpeg_finish_decompress(&d);
        jpeg_destroy_decompress(&d);
        *ret_warnings = e.warnings;
        return 0;
}

/* 0 for a stream decoded without warnings, 1 for one with corruption
 * libjpeg recovered from, -EBADMSG for one that ends early. */
static int judge_warnings(const void *data, size_t len, int warnings, char *err, size_t err_len)
{
        if (warnings == 0)
                return 0;
        /* Data that end before the image does: libjpeg-turbo only warns
         * (and pads with gray); PIL fails them as truncated, and so do we.
         * Other corruption libjpeg recovers from is accepted, as by PIL. */
        if (!jpeg_reaches_eoi(data, len))
                return err_set(err, err_len, -EBADMSG, "JPEG: truncated (data end before the EOI marker)");
        return 1;
}

/* CMYK pixels of img to RGB, in place, giving back the fourth byte. */
static void cmyk_shrink(struct img_rgb *img)
{
        size_t n = (size_t)img->width * (size_t)img->height;
        uint8_t *shrunk;

        cmyk_to_rgb(img->pixels, n);
        shrunk = realloc(img->pixels, n * 3);
        if (shrunk)
                img->pixels = shrunk;
}

/* Decodes at 1/reduce scale into a new image, in one pass of libjpeg (the
 * API under TurboJPEG, with its defaults: the islow IDCT and fancy
 * upsampling, as PIL). Returns 0 for a clean stream, 1 for one with
 * recoverable corruption (decoded, as PIL would), or a negative code. Our
 * own error manager tells a warning from a fatal error that follows one,
 * which TurboJPEG reports alike: no second pass to find out. */
static int decode_scaled(const void *data, size_t len, int w, int h, int cs, int reduce,
                         char *err, size_t err_len, struct img_rgb **ret_img)
{
        bool cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
        struct img_rgb *img = NULL;
        JSAMPROW *rows = NULL;
        int warnings = 0, r;

        r = scaled_alloc(w, h, reduce, cmyk ? 4 : 3, err, err_len, &img, &rows);
        if (r < 0)
                return r;
        r = libjpeg_read(data, len, cmyk, reduce, img->width, img->height, rows, err, err_len, &warnings);
        free(rows);
        if (r < 0)
                goto fail;
        r = judge_warnings(data, len, warnings, err, err_len);
        if (r < 0)
                goto fail;
        if (cmyk)
                cmyk_shrink(img);
        *ret_img = img;
        return r;
fail:
        img_rgb_free(img);
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

/* Unit tests of the image module: sniffing, limits, decoders on exact pixel
 * values and on broken data, Resize/CenterCrop geometry, resampling and
 * normalization.
 *
 *   test_image CORPUS_DIR      (tests/fuzz/corpus: jpeg/ and png/ seeds)
 */
#include "check.h"
#include "image.h"
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_RC(expr, want) do { \
        int rc_ = (expr); \
        if (rc_ != (want)) { \
                fprintf(stderr, "%s:%d: %s returned %d (%s), want %d\n", __FILE__, __LINE__, \
                        #expr, rc_, strerror(rc_ < 0 ? -rc_ : rc_), (want)); \
                check_failures++; \
        } \
} while (0)

static const char *corpus;

/* ---- small helpers -------------------------------------------------------- */

struct buf {
        uint8_t *p;
        size_t n;
};

static void buf_put(struct buf *b, const void *data, size_t len)
{
        uint8_t *np = realloc(b->p, b->n + len);

        if (!np) {
                perror("realloc");
                exit(1);
        }
        b->p = np;
        memcpy(b->p + b->n, data, len);
        b->n += len;
}

static void buf_put32(struct buf *b, uint32_t v)
{
        uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
        buf_put(b, x, 4);
}

static struct buf load(const char *sub, const char *name)
{
        char path[1024];
        struct buf b = { 0 };
        uint8_t tmp[4096];
        size_t n;
        FILE *f;

        snprintf(path, sizeof path, "%s/%s/%s", corpus, sub, name);
        f = fopen(path, "rb");
        if (!f) {
                fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
                exit(1);
        }
        while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
                buf_put(&b, tmp, n);
        fclose(f);
        return b;
}

/* A minimal PNG writer (stored deflate blocks), so that tests know every
 * pixel value going in. raw: rows each led by filter byte 0. */
static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
        crc = ~crc;
        for (size_t i = 0; i < n; i++) {
                crc ^= p[i];
                for (int k = 0; k < 8; k++)
                        crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
        }
        return ~crc;
}

static void png_chunk(struct buf *b, const char *type, const uint8_t *data, size_t len)
{
        uint32_t crc = crc_update(0, (const uint8_t *)type, 4);

        crc = crc_update(crc, data, len);
        buf_put32(b, (uint32_t)len);
        buf_put(b, type, 4);
        if (len)
                buf_put(b, data, len);
        buf_put32(b, crc);
}

static struct buf png_make(int w, int h, int depth, int color, const uint8_t *raw,
                           size_t raw_len, const uint8_t *plte, size_t plte_len,
                           const uint8_t *trns, size_t trns_len)
{
        static const uint8_t sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };
        struct buf b = { 0 }, z = { 0 }, ihdr = { 0 };
        uint32_t a = 1, s = 0;
        uint8_t zh[2] = { 0x78, 0x01 };

        buf_put(&b, sig, 8);
        buf_put32(&ihdr, (uint32_t)w);
        buf_put32(&ihdr, (uint32_t)h);
        buf_put(&ihdr, (uint8_t[]){ (uint8_t)depth, (uint8_t)color, 0, 0, 0 }, 5);
        png_chunk(&b, "IHDR", ihdr.p, ihdr.n);
        if (plte)
                png_chunk(&b, "PLTE", plte, plte_len);
        if (trns)
                png_chunk(&b, "tRNS", trns, trns_len);
        buf_put(&z, zh, 2);
        for (size_t off = 0; off < raw_len || off == 0;) {
                size_t n = raw_len - off > 65535 ? 65535 : raw_len - off;
                uint8_t hd[5] = { (uint8_t)(off + n == raw_len), (uint8_t)n, (uint8_t)(n >> 8),
                                  (uint8_t)~n, (uint8_t)(~n >> 8) };
                buf_put(&z, hd, 5);
                buf_put(&z, raw + off, n);
                off += n;
                if (off == raw_len)
                        break;
        }
        for (size_t i = 0; i < raw_len; i++) {
                a = (a + raw[i]) % 65521;
                s = (s + a) % 65521;
        }
        buf_put32(&z, s << 16 | a);
        png_chunk(&b, "IDAT", z.p, z.n);
        png_chunk(&b, "IEND", NULL, 0);
        free(z.p);
        free(ihdr.p);
        return b;
}

static struct img_rgb *decode_ok(const struct buf *b)
{
        struct img_rgb *img = NULL;
        char err[256] = "";
        int r = img_decode(b->p, b->n, NULL, 0, 0, err, sizeof err, &img);

        if (r < 0) {
                fprintf(stderr, "decode failed: %s\n", err);
                check_failures++;
                return NULL;
        }
        return img;
}

static int px_eq(const struct img_rgb *img, int x, int y, int r, int g, int b)
{
        const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
        if (p[0] == r && p[1] == g && p[2] == b)
                return 1;
        fprintf(stderr, "pixel (%d,%d) = %d %d %d, want %d %d %d\n", x, y, p[0], p[1], p[2], r, g, b);
        return 0;
}

static struct img_rgb *rgb_const(int w, int h, uint8_t r, uint8_t g, uint8_t b)
{
        struct img_rgb *img = calloc(1, sizeof *img);

        img->width = img->full_width = w;
        img->height = img->full_height = h;
        img->reduce = 1;
        img->pixels = malloc((size_t)w * h * 3);
        for (size_t i = 0; i < (size_t)w * h; i++) {
                img->pixels[3 * i] = r;
                img->pixels[3 * i + 1] = g;
                img->pixels[3 * i + 2] = b;
        }
        return img;
}

/* ---- sniffing and limits ------------------------------------------------- */

static void test_sniff(void)
{
        static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };
        struct img_info info;
        char err[256];

        CHECK(img_sniff((const uint8_t[]){ 0xFF, 0xD8, 0xFF }, 3) == IMG_FORMAT_JPEG);
        CHECK(img_sniff((const uint8_t[]){ 0xFF, 0xD8 }, 2) == IMG_FORMAT_UNKNOWN);
        CHECK(img_sniff((const uint8_t[]){ 0xFF, 0xD8, 0x00 }, 3) == IMG_FORMAT_UNKNOWN);
        CHECK(img_sniff(png_sig, 8) == IMG_FORMAT_PNG);
        CHECK(img_sniff(png_sig, 7) == IMG_FORMAT_UNKNOWN);
        CHECK(img_sniff("GIF89a", 6) == IMG_FORMAT_UNKNOWN);
        CHECK(img_sniff(NULL, 0) == IMG_FORMAT_UNKNOWN);
        CHECK(img_sniff("", 0) == IMG_FORMAT_UNKNOWN);
        /* the format comes from the bytes: a GIF is refused whatever the
         * client said it was */
        CHECK_RC(img_probe("GIF89a\1\0\1\0", 10, NULL, err, sizeof err, &info), -ENOTSUP);
        CHECK(strstr(err, "47 49 46 38") != NULL);
        CHECK_RC(img_probe("", 0, NULL, err, sizeof err, &info), -EBADMSG);
}

/* Sets the size in the first SOFn segment of a JPEG. */
static void jpeg_patch_size(struct buf *b, int w, int h)
{
        for (size_t i = 2; i + 9 < b->n; i++) {
                if (b->p[i] == 0xFF && (b->p[i + 1] == 0xC0 || b->p[i + 1] == 0xC1 ||
                                        b->p[i + 1] == 0xC2)) {
                        b->p[i + 5] = (uint8_t)(h >> 8);
                        b->p[i + 6] = (uint8_t)h;
                        b->p[i + 7] = (uint8_t)(w >> 8);
                        b->p[i + 8] = (uint8_t)w;
                        return;
                }
        }
        fprintf(stderr, "no SOF marker\n");
        check_failures++;
}

static void test_limits(void)
{
        struct img_limits lim = IMG_LIMITS_DEFAULT;
        struct effnet_preproc pp = { .size = 8, .crop_pct = 1.0f, .std = { 1, 1, 1 } };
        struct buf j = load("jpeg", "baseline_420_16x16.jpg");
        struct img_rgb *img = NULL;
        struct img_info info;
        char err[256];
        float out[3 * 8 * 8];
        uint8_t ihdr_big[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n',
                               0, 0, 0, 13, 'I', 'H', 'D', 'R',
                               0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30, 8, 2, 0, 0, 0,
                               0, 0, 0, 0 };

        CHECK(lim.max_bytes == IMG_DEFAULT_MAX_BYTES && lim.max_pixels == IMG_DEFAULT_MAX_PIXELS);

        /* 30000 x 30000 in the header, a few hundred bytes of data: refused
         * from the header. Had the decoder allocated and run, it would have
         * failed on the missing data (-EBADMSG) instead. */
        jpeg_patch_size(&j, 30000, 30000);
        CHECK_RC(img_probe(j.p, j.n, NULL, err, sizeof err, &info), -E2BIG);
        CHECK(strstr(err, "30000") != NULL);
        CHECK_RC(img_decode(j.p, j.n, NULL, 0, 0, err, sizeof err, &img), -E2BIG);
        CHECK(img == NULL);
        CHECK_RC(img_prepare(j.p, j.n, NULL, &pp, out, err, sizeof err), -E2BIG);
        /* each side alone */
        jpeg_patch_size(&j, 16385, 16);
        CHECK_RC(img_decode(j.p, j.n, NULL, 0, 0, err, sizeof err, &img), -E2BIG);
        CHECK(strstr(err, "width") != NULL);
        jpeg_patch_size(&j, 16, 16385);
        CHECK_RC(img_decode(j.p, j.n, NULL, 0, 0, err, sizeof err, &img), -E2BIG);
        CHECK(strstr(err, "height") != NULL);
        /* pixels: 16x16 = 256 is allowed at 256, refused at 255 */
        jpeg_patch_size(&j, 16, 16);
        lim.max_pixels = 256;
        CHECK_RC(img_decode(j.p, j.n, &lim, 0, 0, err, sizeof err, &img), 0);
        img = img_rgb_free(img);
        lim.max_pixels = 255;
        CHECK_RC(img_decode(j.p, j.n, &lim, 0, 0, err, sizeof err, &img), -E2BIG);
        CHECK(strstr(err, "pixels") != NULL);
        /* bytes */
        lim = (struct img_limits)IMG_LIMITS_DEFAULT;
        lim.max_bytes = j.n - 1;
        CHECK_RC(img_decode(j.p, j.n, &lim, 0, 0, err, sizeof err, &img), -E2BIG);
        CHECK_RC(img_probe(j.p, j.n, &lim, err, sizeof err, &info), -E2BIG);
        lim.max_bytes = j.n;
        CHECK_RC(img_probe(j.p, j.n, &lim, err, sizeof err, &info), 0);
        CHECK(info.format == IMG_FORMAT_JPEG && info.width == 16 && info.height == 16);

        /* PNG: the same from the IHDR, before libpng runs */
        CHECK_RC(img_probe(ihdr_big, sizeof ihdr_big, NULL, err, sizeof err, &info), -E2BIG);
        CHECK_RC(img_decode(ihdr_big, sizeof ihdr_big, NULL, 0, 0, err, sizeof err, &img), -E2BIG);
        ihdr_big[18] = ihdr_big[19] = 0; /* width 0 */
        CHECK_RC(img_probe(ihdr_big, sizeof ihdr_big, NULL, err, sizeof err, &info), -EBADMSG);
        free(j.p);
}

/* ---- PNG ----------------------------------------------------------------- */

static void test_png_kinds(void)
{
        struct img_rgb *img;
        struct buf b;

        /* gray 8 */
        {
                uint8_t raw[] = { 0, 0, 50, 7, 0, 200, 255, 1 };
                b = png_make(3, 2, 8, 0, raw, sizeof raw, NULL, 0, NULL, 0);
                img = decode_ok(&b);
                CHECK(img && img->width == 3 && img->height == 2);
                CHECK(img && px_eq(img, 0, 0, 0, 0, 0) && px_eq(img, 1, 0, 50, 50, 50) &&
                      px_eq(img, 1, 1, 255, 255, 255));
                img_rgb_free(img);
                free(b.p);
        }
        /* gray 16: the high byte */
        {
                uint8_t raw[] = { 0, 0x12, 0x34, 0xFF, 0x01 };
                b = png_make(2, 1, 16, 0, raw, sizeof raw, NULL, 0, NULL, 0);
                img = decode_ok(&b);
                CHECK(img && px_eq(img, 0, 0, 0x12, 0x12, 0x12) && px_eq(img, 1, 0, 0xFF, 0xFF, 0xFF));
                img_rgb_free(img);
                free(b.p);
        }
        /* gray 1 and 2 bits: scaled to 0..255 */
        {
                uint8_t raw1[] = { 0, 0xA0 }; /* 1 0 1 */
                uint8_t raw2[] = { 0, 0x1B }; /* 0 1 2 3 */
                b = png_make(3, 1, 1, 0, raw1, sizeof raw1, NULL, 0, NULL, 0);
                img = decode_ok(&b);
                CHECK(img && px_eq(img, 0, 0, 255, 255, 255) && px_eq(img, 1, 0, 0, 0, 0) &&
                      px_eq(img, 2, 0, 255, 255, 255));
                img_rgb_free(img);
                free(b.p);
                b = png_make(4, 1, 2, 0, raw2, sizeof raw2, NULL, 0, NULL, 0);
                img = decode_ok(&b);
                CHECK(img && px_eq(img, 0, 0, 0, 0, 0) && px_eq(img, 1, 0, 85, 85, 85) &&
                      px_eq(img, 2, 0, 170, 170, 170) && px_eq(img, 3, 0, 255, 255, 255));
                img_rgb_free(img);
                free(b.p);
        }
        /* gray + alpha: alpha dropped, not composited */
        {
                uint8_t raw[] = { 0, 10, 99, 200, 0 };
                b = png_make(2, 1, 8, 4, raw, sizeof raw, NULL, 0, NULL, 0);
                img = decode_ok(&b);
                CHECK(img && px_eq(img, 0, 0, 10, 10, 10) && px_eq(img, 1, 0, 200, 200, 200));
                img_rgb_free(img);
                free(b.p);
        }
        /* palette with tRNS: colors looked up, transparency ignored */
        {
                uint8_t plte[] = { 1, 2, 3, 4, 5, 6 };
                uint8_t trns[] = { 0, 128 };
                uint8_t raw[] = { 0, 1, 0 };
                b = png_make(2, 1, 8, 3, raw, sizeof raw, plte, sizeof plte, trns, sizeof trns);
                img = decode_ok(&b);
                CHECK(img && px_eq(img, 0, 0, 4, 5, 6) && px_eq(img, 1, 0, 1, 2, 3));
                img_rgb_free(img);
                free(b.p);
        }
        /* RGBA 16: high bytes, alpha 0 dropped */
        {
                uint8_t raw[] = { 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0, 0 };
                b = png_make(1, 1, 16, 6, raw, sizeof raw, NULL, 0, NULL, 0);
                img = decode_ok(&b);
                CHECK(img && px_eq(img, 0, 0, 0x11, 0x33, 0x55));
                img_rgb_free(img);
                free(b.p);
        }
        /* RGB 8 with tRNS: the color key is ignored */
        {
                uint8_t trns[] = { 0, 7, 0, 8, 0, 9 };
                uint8_t raw[] = { 0, 7, 8, 9, 1, 2, 3 };
                b = png_make(2, 1, 8, 2, raw, sizeof raw, NULL, 0, trns, sizeof trns);
                img = decode_ok(&b);
                CHECK(img && px_eq(img, 0, 0, 7, 8, 9) && px_eq(img, 1, 0, 1, 2, 3));
                img_rgb_free(img);
                free(b.p);
        }
        /* interlaced seed equals its content decoded by rows: same size,
         * decodes; the equivalence test compares it with PIL */
        b = load("png", "adam7_rgb8_9x7.png");
        img = decode_ok(&b);
        CHECK(img && img->width == 9 && img->height == 7);
        img_rgb_free(img);
        free(b.p);
}

static void test_png_broken(void)
{
        uint8_t raw[3 * 4 * 4 + 4] = { 0 };
        struct img_rgb *img = NULL;
        char err[256];
        struct buf b;
        int ok = 0;

        for (size_t i = 0; i < sizeof raw; i++)
                raw[i] = (uint8_t)(i % 13 == 0 ? 0 : i * 7);
        b = png_make(4, 4, 8, 2, raw, sizeof raw, NULL, 0, NULL, 0);
        CHECK_RC(img_decode(b.p, b.n, NULL, 0, 0, err, sizeof err, &img), 0);
        img = img_rgb_free(img);

        /* every truncation inside the image data fails (IEND itself is not
         * needed, as for PIL) */
        for (size_t n = 0; n < b.n - 12; n++) {
                int r = img_decode(b.p, n, NULL, 0, 0, err, sizeof err, &img);
                if (r == 0) {
                        fprintf(stderr, "PNG truncated to %zu of %zu bytes decoded\n", n, b.n);
                        check_failures++;
                        img = img_rgb_free(img);
                } else if (r != -EBADMSG && r != -ENOTSUP) {
                        fprintf(stderr, "PNG truncated to %zu: %d\n", n, r);
                        check_failures++;
                }
        }
        /* a bad CRC on the image data */
        b.p[b.n - 12 - 5] ^= 0x55;
        CHECK_RC(img_decode(b.p, b.n, NULL, 0, 0, err, sizeof err, &img), -EBADMSG);
        CHECK(strncmp(err, "PNG: ", 5) == 0);
        b.p[b.n - 12 - 5] ^= 0x55;
        /* every single-byte corruption: any outcome but a crash */
        for (size_t i = 8; i < b.n; i++) {
                b.p[i] ^= 0xA5;
                if (img_decode(b.p, b.n, NULL, 0, 0, err, sizeof err, &img) == 0) {
                        ok++;
                        img = img_rgb_free(img);
                }
                b.p[i] ^= 0xA5;
        }
        CHECK(ok < (int)b.n);
        free(b.p);
}

/* ---- JPEG ---------------------------------------------------------------- */

static void test_jpeg_seeds(void)
{
        static const struct { const char *name; int w, h; } seeds[] = {
                { "baseline_420_16x16.jpg", 16, 16 }, { "baseline_444_13x7.jpg", 13, 7 },
                { "baseline_422_17x11.jpg", 17, 11 }, { "progressive_16x16.jpg", 16, 16 },
                { "gray_9x9.jpg", 9, 9 }, { "cmyk_8x8.jpg", 8, 8 },
                { "restart_16x8.jpg", 16, 8 }, { "arith_16x8.jpg", 16, 8 },
                { "baseline_420_64x48.jpg", 64, 48 },
        };

        for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
                struct buf b = load("jpeg", seeds[i].name);
                struct img_info info;
                struct img_rgb *img;
                char err[256];

                CHECK_RC(img_probe(b.p, b.n, NULL, err, sizeof err, &info), 0);
                CHECK(info.format == IMG_FORMAT_JPEG && info.width == seeds[i].w &&
                      info.height == seeds[i].h);
                img = decode_ok(&b);
                CHECK(img && img->width == seeds[i].w && img->height == seeds[i].h &&
                      img->reduce == 1);
                if (img && !strncmp(seeds[i].name, "gray", 4)) {
                        int same = 1;
                        for (size_t k = 0; k < (size_t)img->width * img->height; k++)
                                same &= img->pixels[3 * k] == img->pixels[3 * k + 1] &&
                                        img->pixels[3 * k] == img->pixels[3 * k + 2];
                        CHECK(same);
                }
                img_rgb_free(img);
                free(b.p);
        }
}

static void test_jpeg_broken(void)
{
        const char *names[] = { "baseline_420_16x16.jpg", "progressive_16x16.jpg",
                                "cmyk_8x8.jpg", "arith_16x8.jpg" };

        for (size_t f = 0; f < sizeof names / sizeof names[0]; f++) {
                struct buf b = load("jpeg", names[f]);
                struct img_rgb *img = NULL;
                char err[256];
                struct buf t = { 0 };

                /* every truncation fails: PIL raises "image file is truncated" */
                for (size_t n = 0; n < b.n; n++) {
                        int r = img_decode(b.p, n, NULL, 0, 0, err, sizeof err, &img);
                        if (r == 0) {
                                fprintf(stderr, "%s truncated to %zu of %zu bytes decoded\n",
                                        names[f], n, b.n);
                                check_failures++;
                                img = img_rgb_free(img);
                        } else if (r != -EBADMSG && r != -ENOTSUP) {
                                fprintf(stderr, "%s truncated to %zu: %d\n", names[f], n, r);
                                check_failures++;
                        }
                }
                /* bytes after EOI are ignored, as libjpeg and PIL do */
                buf_put(&t, b.p, b.n);
                buf_put(&t, "trailing garbage", 16);
                CHECK_RC(img_decode(t.p, t.n, NULL, 0, 0, err, sizeof err, &img), 0);
                img = img_rgb_free(img);
                /* every single-byte corruption: any outcome but a crash */
                for (size_t i = 3; i < b.n; i++) {
                        b.p[i] ^= 0x5A;
                        if (img_decode(b.p, b.n, NULL, 0, 0, err, sizeof err, &img) == 0)
                                img = img_rgb_free(img);
                        b.p[i] ^= 0x5A;
                }
                free(t.p);
                free(b.p);
        }
}

/* Inputs a fuzzer found. */
static void test_jpeg_regressions(void)
{
        struct buf b = load("jpeg", "regress_warning_then_fatal.jpg");
        struct img_rgb *img = NULL;
        char err[256];

        /* a warning, then a fatal error: TurboJPEG still reports a warning;
         * PIL refuses the file, and so must we (the pixels are unset) */
        unsigned long long before = img_jpeg_decode_passes();
        CHECK_RC(img_decode(b.p, b.n, NULL, 0, 0, err, sizeof err, &img), -EBADMSG);
        CHECK(img == NULL && strstr(err, "Huffman") != NULL);
        { unsigned long long n = img_jpeg_decode_passes() - before; CHECK_MSG(n == 1, "%llu passes", n); }
        free(b.p);

        /* recoverable corruption: accepted, as PIL does, and decoded at
         * full size even when a reduced scale was allowed (at 1/8 it made
         * libjpeg-turbo read coefficients it never set) */
        b = load("jpeg", "regress_corrupt_at_1_8.jpg");
        unsigned long long passes = img_jpeg_decode_passes();
        CHECK_RC(img_decode(b.p, b.n, NULL, 0, 0, err, sizeof err, &img), 0);
        /* decoded once: a warning does not cost a second pass */
        { unsigned long long n = img_jpeg_decode_passes() - passes; CHECK_MSG(n == 1, "%llu passes", n); }
        CHECK(img && img->reduce == 1 && img->width == 48 && img->height == 64);
        img = img_rgb_free(img);
        CHECK_RC(img_decode(b.p, b.n, NULL, 1, 1, err, sizeof err, &img), 0);
        CHECK(img && img->reduce == 1 && img->width == 48 && img->height == 64);
        img = img_rgb_free(img);
        free(b.p);
}

/* A progressive JPEG whose last scan repeats 600 times (libjpeg only warns
 * about each): refused at 500 scans, before it can cost time. */
static void test_jpeg_scan_limit(void)
{
        struct buf b = load("jpeg", "progressive_16x16.jpg"), bomb = { 0 };
        struct img_rgb *img = NULL;
        char err[256];
        size_t sos = 0, eoi = 0;

        for (size_t i = 0; i + 1 < b.n; i++) {
                if (b.p[i] == 0xFF && b.p[i + 1] == 0xDA)
                        sos = i;
                if (b.p[i] == 0xFF && b.p[i + 1] == 0xD9)
                        eoi = i;
        }
        CHECK(sos > 0 && eoi > sos);
        buf_put(&bomb, b.p, eoi);
        for (int k = 0; k < 600; k++)
                buf_put(&bomb, b.p + sos, eoi - sos);
        buf_put(&bomb, "\xFF\xD9", 2);
        CHECK_RC(img_decode(bomb.p, bomb.n, NULL, 0, 0, err, sizeof err, &img), -EBADMSG);
        CHECK(strstr(err, "scans") != NULL);
        free(bomb.p);
        free(b.p);
}

static void test_jpeg_fast(void)
{
        struct buf b = load("jpeg", "baseline_420_64x48.jpg");
        struct img_rgb *img = NULL;
        char err[256];

        /* the largest of 1/2, 1/4 that stays >= the minimum */
        CHECK_RC(img_decode(b.p, b.n, NULL, 8, 6, err, sizeof err, &img), 0);
        CHECK(img && img->reduce == 4 && img->width == 16 && img->height == 12 &&
              img->full_width == 64 && img->full_height == 48);
        img = img_rgb_free(img);
        CHECK_RC(img_decode(b.p, b.n, NULL, 17, 6, err, sizeof err, &img), 0);
        CHECK(img && img->reduce == 2 && img->width == 32 && img->height == 24);
        img = img_rgb_free(img);
        CHECK_RC(img_decode(b.p, b.n, NULL, 33, 1, err, sizeof err, &img), 0);
        CHECK(img && img->reduce == 1 && img->width == 64);
        img = img_rgb_free(img);
        free(b.p);
}

/* ---- geometry, resize, normalize ------------------------------------------- */

static void test_plan(void)
{
        struct effnet_preproc pp = { .size = 384, .resize = EFFNET_RESIZE_BILINEAR,
                                     .crop = EFFNET_CROP_CENTER, .crop_pct = 1.0f,
                                     .std = { 1, 1, 1 } };
        struct img_geometry g;

        CHECK_RC(img_plan(&pp, 500, 375, &g), 0);
        CHECK(g.resize_width == 512 && g.resize_height == 384 && g.crop_x == 64 && g.crop_y == 0);
        CHECK_RC(img_plan(&pp, 375, 500, &g), 0);
        CHECK(g.resize_width == 384 && g.resize_height == 512 && g.crop_x == 0 && g.crop_y == 64);
        /* torchvision truncates the long side: int(224 * 333 / 251) = 297 */
        pp.size = 224;
        CHECK_RC(img_plan(&pp, 333, 251, &g), 0);
        CHECK(g.resize_width == 297 && g.resize_height == 224 && g.crop_x == 36);
        /* crop offsets use Python's round-half-even: 0.5->0 1.5->2 2.5->2 3.5->4 */
        pp.size = 10;
        {
                static const int extra[] = { 1, 3, 5, 7 }, want[] = { 0, 2, 2, 4 };
                for (int i = 0; i < 4; i++) {
                        CHECK_RC(img_plan(&pp, 10 + extra[i], 10, &g), 0);
                        CHECK(g.resize_width == 10 + extra[i] && g.crop_x == want[i]);
                }
        }
        /* timm crop_pct: floor(224 / 0.875) = 256; floor(240 / 0.882) = 272 */
        pp.size = 224;
        pp.crop_pct = 0.875f;
        CHECK_RC(img_plan(&pp, 600, 400, &g), 0);
        CHECK(g.resize_height == 256 && g.resize_width == 384 && g.crop_x == 80 && g.crop_y == 16);
        pp.size = 240;
        pp.crop_pct = 0.882f;
        CHECK_RC(img_plan(&pp, 400, 400, &g), 0);
        CHECK(g.resize_height == 272 && g.crop_y == 16);
        /* crop_pct > 1 pads: floor(224 / 1.15) = 194, (224 - 194) // 2 = 15 before */
        pp.size = 224;
        pp.crop_pct = 1.15f;
        CHECK_RC(img_plan(&pp, 300, 200, &g), 0);
        CHECK(g.resize_height == 194 && g.resize_width == 291 && g.crop_y == -15 && g.crop_x == 34);
        /* squash: both sides, aspect ignored */
        pp.crop = EFFNET_CROP_SQUASH;
        pp.crop_pct = 1.0f;
        pp.size = 480;
        CHECK_RC(img_plan(&pp, 1000, 10, &g), 0);
        CHECK(g.resize_width == 480 && g.resize_height == 480 && g.crop_x == 0 && g.crop_y == 0);
        /* invalid */
        pp.size = 0;
        CHECK_RC(img_plan(&pp, 10, 10, &g), -EINVAL);
        pp.size = 224;
        pp.crop_pct = 0.0f;
        CHECK_RC(img_plan(&pp, 10, 10, &g), -EINVAL);
        pp.crop_pct = NAN;
        CHECK_RC(img_plan(&pp, 10, 10, &g), -EINVAL);
        pp.crop_pct = 1.0f;
        pp.resize = 7;
        CHECK_RC(img_plan(&pp, 10, 10, &g), -EINVAL);
        pp.resize = EFFNET_RESIZE_BICUBIC;
        pp.crop = 9;
        CHECK_RC(img_plan(&pp, 10, 10, &g), -EINVAL);
        CHECK_RC(img_plan(NULL, 10, 10, &g), -EINVAL);
}

static void test_resize_constant(void)
{
        static const int sizes[][2] = { { 1, 1 }, { 7, 3 }, { 64, 64 }, { 333, 251 },
                                        { 1000, 17 }, { 40, 400 } };
        static const int outs[] = { 1, 5, 32, 100, 224 };

        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                struct img_rgb *img = rgb_const(sizes[s][0], sizes[s][1], 13, 128, 250);
                for (int filter = 0; filter < 2; filter++)
                        for (int crop = 0; crop < 2; crop++)
                                for (size_t o = 0; o < sizeof outs / sizeof outs[0]; o++) {
                                        struct effnet_preproc pp = {
                                                .size = outs[o], .resize = filter, .crop = crop,
                                                .crop_pct = crop ? 1.0f : 0.875f,
                                        };
                                        struct img_geometry g;
                                        size_t n = (size_t)outs[o] * outs[o];
                                        uint8_t *out = malloc(n * 3);
                                        int bad = 0;

                                        CHECK_RC(img_plan(&pp, img->width, img->height, &g), 0);
                                        CHECK_RC(img_resize_crop(img, &g, filter, out), 0);
                                        for (size_t i = 0; i < n; i++)
                                                bad += out[3 * i] != 13 || out[3 * i + 1] != 128 ||
                                                       out[3 * i + 2] != 250;
                                        if (bad) {
                                                fprintf(stderr, "constant %dx%d -> %d (filter %d crop %d): %d pixels changed\n",
                                                        img->width, img->height, outs[o], filter, crop, bad);
                                                check_failures++;
                                        }
                                        free(out);
                                }
                img_rgb_free(img);
        }
}

/* A window of the resized image equals the same pixels of the whole. */
static void test_resize_window(void)
{
        struct img_rgb *img = rgb_const(37, 23, 0, 0, 0);

        for (size_t i = 0; i < (size_t)37 * 23 * 3; i++)
                img->pixels[i] = (uint8_t)((i * 2654435761u) >> 13);
        for (int filter = 0; filter < 2; filter++) {
                int dims[][2] = { { 40, 40 }, { 11, 13 }, { 37, 60 }, { 90, 23 } };
                for (size_t d = 0; d < 4; d++) {
                        int rw = dims[d][0], rh = dims[d][1], full = rw > rh ? rw : rh;
                        struct img_geometry whole = { rw, rh, 0, 0, full };
                        struct img_geometry part = { rw, rh, rw / 3, rh / 4, full / 2 };
                        uint8_t *a = malloc((size_t)full * full * 3);
                        uint8_t *b = malloc((size_t)full * full * 3);
                        int bad = 0;

                        CHECK_RC(img_resize_crop(img, &whole, filter, a), 0);
                        CHECK_RC(img_resize_crop(img, &part, filter, b), 0);
                        for (int y = 0; y < part.size; y++)
                                for (int x = 0; x < part.size; x++)
                                        for (int c = 0; c < 3; c++) {
                                                int sx = x + part.crop_x, sy = y + part.crop_y;
                                                uint8_t want = sx < rw && sy < rh ?
                                                        a[((size_t)sy * full + sx) * 3 + c] : 0;
                                                bad += b[((size_t)y * part.size + x) * 3 + c] != want;
                                        }
                        if (bad) {
                                fprintf(stderr, "window of %dx%d (filter %d): %d values differ\n",
                                        rw, rh, filter, bad);
                                check_failures++;
                        }
                        free(a);
                        free(b);
                }
        }
        img_rgb_free(img);
}

static void test_normalize(void)
{
        struct effnet_preproc pp = { .size = 6, .resize = EFFNET_RESIZE_BICUBIC,
                                     .crop = EFFNET_CROP_CENTER, .crop_pct = 0.875f,
                                     .mean = { 0.485f, 0.456f, 0.406f },
                                     .std = { 0.229f, 0.224f, 0.225f } };
        struct img_rgb *img = rgb_const(20, 9, 0, 128, 255);
        float out[3 * 6 * 6];
        char err[256];
        int bad = 0;

        CHECK_RC(img_preprocess(img, &pp, out, err, sizeof err), 0);
        for (int c = 0; c < 3; c++) {
                float v = c == 0 ? 0.0f : c == 1 ? 128.0f : 255.0f;
                float want = (v / 255.0f - pp.mean[c]) / pp.std[c];
                for (int i = 0; i < 36; i++)
                        bad += out[c * 36 + i] != want; /* NCHW planes */
        }
        CHECK(bad == 0);

        /* an identity resize (squash to the same size) keeps the pixels */
        img_rgb_free(img);
        img = rgb_const(6, 6, 0, 0, 0);
        for (int i = 0; i < 36 * 3; i++)
                img->pixels[i] = (uint8_t)(i * 7);
        pp.crop = EFFNET_CROP_SQUASH;
        pp.crop_pct = 1.0f;
        CHECK_RC(img_preprocess(img, &pp, out, err, sizeof err), 0);
        bad = 0;
        for (int i = 0; i < 36; i++)
                for (int c = 0; c < 3; c++)
                        bad += out[c * 36 + i] !=
                               ((float)img->pixels[3 * i + c] / 255.0f - pp.mean[c]) / pp.std[c];
        CHECK(bad == 0);

        /* bad normalization parameters */
        pp.std[1] = 0.0f;
        CHECK_RC(img_preprocess(img, &pp, out, err, sizeof err), -EINVAL);
        img_rgb_free(img);
}

/* Failing calls leave the caller's output alone. */
static void test_output_untouched(void)
{
        struct effnet_preproc pp = { .size = 8, .resize = EFFNET_RESIZE_BILINEAR,
                                     .crop = EFFNET_CROP_CENTER, .crop_pct = 1.0f,
                                     .std = { 1, 1, 1 } };
        struct buf b = load("jpeg", "baseline_420_16x16.jpg");
        float out[3 * 8 * 8];
        char err[256];
        int bad = 0;

        for (int i = 0; i < 3 * 64; i++)
                out[i] = 12345.0f;
        CHECK(img_prepare(b.p, b.n - 10, NULL, &pp, out, err, sizeof err) < 0);
        CHECK(img_prepare("nope", 4, NULL, &pp, out, err, sizeof err) == -ENOTSUP);
        pp.size = -1;
        CHECK(img_prepare(b.p, b.n, NULL, &pp, out, err, sizeof err) == -EINVAL);
        for (int i = 0; i < 3 * 64; i++)
                bad += out[i] != 12345.0f;
        CHECK(bad == 0);
        /* and the fast path gives a result on a large enough JPEG */
        pp.size = 8;
        {
                struct img_opts o = IMG_OPTS_DEFAULT;
                struct buf big = load("jpeg", "baseline_420_64x48.jpg");
                o.jpeg_fast = true;
                CHECK_RC(img_prepare(big.p, big.n, &o, &pp, out, err, sizeof err), 0);
                free(big.p);
        }
        free(b.p);
}

int main(int argc, char **argv)
{
        if (argc < 2) {
                fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
                return 2;
        }
        corpus = argv[1];

        test_sniff();
        test_limits();
        test_png_kinds();
        test_png_broken();
        test_jpeg_seeds();
        test_jpeg_broken();
        test_jpeg_regressions();
        test_jpeg_scan_limit();
        test_jpeg_fast();
        test_plan();
        test_resize_constant();
        test_resize_window();
        test_normalize();
        test_output_untouched();

        if (CHECK_DONE())
                return 1;
        printf("image: all checks passed\n");
        return 0;
}

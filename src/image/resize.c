/* resize: PIL's antialiased separable resampler (ImagingResample, 8-bit
 * path), restricted to the output window a center crop keeps.
 *
 * Bit-exactness with PIL rests on doing the same arithmetic in the same
 * order: double-precision filter weights normalized per output pixel, then
 * rounded to 22-bit fixed point; integer accumulation with a half-unit bias;
 * a horizontal pass rounded and clipped to 8 bits, then a vertical one. Each
 * output pixel depends only on its own weights, so computing a window of the
 * resized image gives the same values as resizing all of it and cropping.
 * The project builds with -std=c11, which keeps GCC from contracting a*b+c
 * into FMAs that would round differently from PIL. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"

/* 8 bits of result, 2 of headroom for negative lobes and sums above 1. */
#define PRECISION_BITS (32 - 8 - 2)

struct filter {
        double (*fn)(double x);
        double support;
};

static double bilinear(double x)
{
        if (x < 0.0)
                x = -x;
        if (x < 1.0)
                return 1.0 - x;
        return 0.0;
}

/* Keys cubic convolution with a = -0.5. */
static double bicubic(double x)
{
        const double a = -0.5;

        if (x < 0.0)
                x = -x;
        if (x < 1.0)
                return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        if (x < 2.0)
                return (((x - 5) * x + 8) * x - 4) * a;
        return 0.0;
}

static const struct filter filters[] = {
        [EFFNET_RESIZE_BILINEAR] = { bilinear, 1.0 },
        [EFFNET_RESIZE_BICUBIC] = { bicubic, 2.0 },
};

/* Weights of outputs [first, first + n) of a resize from in_size source
 * pixels, spanning [0, extent) in source coordinates, to out_size. */
struct coeffs {
        int ksize;      /* weights per output */
        int *bounds;    /* [n][2] first source index, number of taps */
        int32_t *k;     /* [n][ksize] fixed point, PRECISION_BITS */
};

static void coeffs_free(struct coeffs *c)
{
        free(c->bounds);
        free(c->k);
}

/* PIL's precompute_coeffs + normalize_coeffs_8bpc. */
static int coeffs_init(struct coeffs *c, const struct filter *f, int in_size,
                       double extent, int out_size, int first, int n)
{
        double scale = extent / out_size;
        double filterscale = scale < 1.0 ? 1.0 : scale;
        double support = f->support * filterscale;
        double ss = 1.0 / filterscale;
        double *w = NULL;

        *c = (struct coeffs){ .ksize = (int)ceil(support) * 2 + 1 };
        w = malloc(sizeof(double) * (size_t)c->ksize);
        c->bounds = malloc(sizeof(int) * 2 * (size_t)n);
        c->k = malloc(sizeof(int32_t) * (size_t)c->ksize * (size_t)n);
        if (!w || !c->bounds || !c->k) {
                free(w);
                coeffs_free(c);
                return -ENOMEM;
        }
        for (int j = 0; j < n; j++) {
                int xx = first + j;
                double center = (xx + 0.5) * scale;
                double ww = 0.0;
                int xmin = (int)(center - support + 0.5);
                int xmax = (int)(center + support + 0.5);
                int32_t *k = &c->k[(size_t)j * (size_t)c->ksize];

                if (xmin < 0)
                        xmin = 0;
                if (xmax > in_size)
                        xmax = in_size;
                xmax -= xmin;
                if (xmax < 0)
                        xmax = 0;
                if (xmax > c->ksize) /* cannot happen; keeps the loops in bounds */
                        xmax = c->ksize;
                for (int x = 0; x < xmax; x++) {
                        w[x] = f->fn((x + xmin - center + 0.5) * ss);
                        ww += w[x];
                }
                for (int x = 0; x < xmax; x++)
                        if (ww != 0.0)
                                w[x] /= ww;
                for (int x = 0; x < c->ksize; x++) {
                        double v = x < xmax ? w[x] : 0.0;
                        k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                                     : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
                }
                c->bounds[2 * j] = xmin;
                c->bounds[2 * j + 1] = xmax;
        }
        free(w);
        return 0;
}

static inline uint8_t clip8(int32_t v)
{
        if (v <= 0)
                return 0;
        v >>= PRECISION_BITS;
        return v > 255 ? 255 : (uint8_t)v;
}

/* One row of the horizontal pass: n RGB outputs from the source row s.
 * |sum of weights| stays below 1.2, so 255 * 1.2 * 2^22 fits an int32. */
static void pass_h(const uint8_t *s, const struct coeffs *c, int n, uint8_t *d)
{
        for (int j = 0; j < n; j++) {
                const int32_t *k = &c->k[(size_t)j * (size_t)c->ksize];
                const uint8_t *p = s + 3 * (size_t)c->bounds[2 * j];
                int taps = c->bounds[2 * j + 1];
                int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;

                for (int x = 0; x < taps; x++) {
                        s0 += p[3 * x + 0] * k[x];
                        s1 += p[3 * x + 1] * k[x];
                        s2 += p[3 * x + 2] * k[x];
                }
                d[3 * j + 0] = clip8(s0);
                d[3 * j + 1] = clip8(s1);
                d[3 * j + 2] = clip8(s2);
        }
}

/* One row of the vertical pass: bytes values (nx * 3) from rows of base
 * selected by the weights k over taps rows starting at row first. */
static void pass_v(const uint8_t *base, size_t stride, int first, int taps,
                   const int32_t *k, size_t bytes, uint8_t *d)
{
        for (size_t i = 0; i < bytes; i++) {
                const uint8_t *p = base + (size_t)first * stride + i;
                int32_t acc = 1 << (PRECISION_BITS - 1);

                for (int y = 0; y < taps; y++)
                        acc += p[(size_t)y * stride] * k[y];
                d[i] = clip8(acc);
        }
}

/* The part of the resized image a crop keeps, and what it takes from the
 * source. */
struct window {
        int x0, y0, x1, y1;     /* [x0, x1) x [y0, y1) of the resized image */
        int nx, ny;             /* its size; <= 0 when the crop misses the image */
        double ext_w, ext_h;    /* the source's extent, in its pixels */
        bool need_h, need_v;    /* which passes resample (else they copy) */
};

/* The window of g, clipped to the resized image. */
static void window_of(const struct img_rgb *src, const struct img_geometry *g, struct window *ret_win)
{
        struct window w;

        w.x0 = g->crop_x < 0 ? 0 : g->crop_x;
        w.y0 = g->crop_y < 0 ? 0 : g->crop_y;
        w.x1 = g->crop_x + g->size < g->resize_width ? g->crop_x + g->size : g->resize_width;
        w.y1 = g->crop_y + g->size < g->resize_height ? g->crop_y + g->size : g->resize_height;
        w.nx = w.x1 - w.x0;
        w.ny = w.y1 - w.y0;
        /* A reduced-scale decode covers the full image's extent divided by
         * reduce, which can end inside its last pixel. */
        w.ext_w = src->reduce == 1 ? src->width : (double)src->full_width / src->reduce;
        w.ext_h = src->reduce == 1 ? src->height : (double)src->full_height / src->reduce;
        w.need_h = g->resize_width != src->width || w.ext_w != src->width;
        w.need_v = g->resize_height != src->height || w.ext_h != src->height;
        *ret_win = w;
}

/* The vertical weights (when the pass resamples) and the source rows
 * [row_lo, row_hi) the window reads. */
static int plan_vertical(const struct filter *f, const struct img_rgb *src, const struct img_geometry *g,
                         const struct window *win, struct coeffs *vc, int *ret_row_lo, int *ret_row_hi)
{
        int row_lo, row_hi, r;

        if (!win->need_v) {
                *ret_row_lo = win->y0;
                *ret_row_hi = win->y1;
                return 0;
        }
        r = coeffs_init(vc, f, src->height, win->ext_h, g->resize_height, win->y0, win->ny);
        if (r < 0)
                return r;
        row_lo = vc->bounds[0];
        row_hi = row_lo;
        for (int j = 0; j < win->ny; j++) {
                int lo = vc->bounds[2 * j], hi = lo + vc->bounds[2 * j + 1];
                if (lo < row_lo)
                        row_lo = lo;
                if (hi > row_hi)
                        row_hi = hi;
        }
        *ret_row_lo = row_lo;
        *ret_row_hi = row_hi;
        return 0;
}

/* The horizontal pass over source rows [row_lo, row_hi) into a new *ret_tmp
 * (NULL when the pass is a copy), and where the vertical pass reads its
 * input: *ret_base, a row every *ret_stride bytes, starting at row_lo. */
static int pass_horizontal(const struct filter *f, const struct img_rgb *src, const struct img_geometry *g,
                           const struct window *win, int row_lo, int row_hi, struct coeffs *hc,
                           uint8_t **ret_tmp, const uint8_t **ret_base, size_t *ret_stride)
{
        size_t sstride = (size_t)src->width * 3;
        uint8_t *tmp; /* [row_hi - row_lo][nx][3] after the horizontal pass */
        int r;

        if (!win->need_h) {
                /* Same size, same extent: PIL skips the pass (its weights
                 * would be the identity). */
                *ret_tmp = NULL;
                *ret_base = src->pixels + (size_t)row_lo * sstride + (size_t)win->x0 * 3;
                *ret_stride = sstride;
                return 0;
        }
        r = coeffs_init(hc, f, src->width, win->ext_w, g->resize_width, win->x0, win->nx);
        if (r < 0)
                return r;
        tmp = malloc((size_t)(row_hi > row_lo ? row_hi - row_lo : 1) * (size_t)win->nx * 3);
        if (!tmp)
                return -ENOMEM;
        for (int y = row_lo; y < row_hi; y++)
                pass_h(src->pixels + (size_t)y * sstride, hc, win->nx,
                       tmp + (size_t)(y - row_lo) * (size_t)win->nx * 3);
        *ret_tmp = tmp;
        *ret_base = tmp;
        *ret_stride = (size_t)win->nx * 3;
        return 0;
}

/* The vertical pass (or a copy) from base into the window's place in out,
 * the rest of out zero. Cannot fail. */
static void pass_vertical(const struct img_geometry *g, const struct window *win, const struct coeffs *vc,
                          const uint8_t *base, size_t stride, int row_lo, uint8_t *out)
{
        size_t out_stride = (size_t)g->size * 3;

        if (win->nx < g->size || win->ny < g->size)
                memset(out, 0, out_stride * (size_t)g->size);
        for (int j = 0; j < win->ny; j++) {
                uint8_t *d = out + (size_t)(win->y0 + j - g->crop_y) * out_stride +
                             (size_t)(win->x0 - g->crop_x) * 3;
                if (win->need_v)
                        pass_v(base, stride, vc->bounds[2 * j] - row_lo, vc->bounds[2 * j + 1],
                               &vc->k[(size_t)j * (size_t)vc->ksize], (size_t)win->nx * 3, d);
                else
                        memcpy(d, base + (size_t)(win->y0 + j - row_lo) * stride, (size_t)win->nx * 3);
        }
}

int img_resize_crop(const struct img_rgb *src, const struct img_geometry *g,
                    int filter, uint8_t *out)
{
        const struct filter *f;
        struct coeffs hc = { 0 }, vc = { 0 };
        struct window win;
        int row_lo, row_hi, r;
        uint8_t *tmp = NULL;
        const uint8_t *base;
        size_t stride;

        if (!src || !src->pixels || !g || !out || g->size < 1 ||
            g->resize_width < 1 || g->resize_height < 1 ||
            (filter != EFFNET_RESIZE_BILINEAR && filter != EFFNET_RESIZE_BICUBIC) ||
            src->reduce < 1)
                return -EINVAL;
        f = &filters[filter];
        window_of(src, g, &win);
        if (win.nx <= 0 || win.ny <= 0) {
                memset(out, 0, (size_t)g->size * 3 * (size_t)g->size);
                return 0;
        }
        r = plan_vertical(f, src, g, &win, &vc, &row_lo, &row_hi);
        if (r < 0)
                goto fail;
        r = pass_horizontal(f, src, g, &win, row_lo, row_hi, &hc, &tmp, &base, &stride);
        if (r < 0)
                goto fail;
        /* Nothing fails from here on: out is written only on success. */
        pass_vertical(g, &win, &vc, base, stride, row_lo, out);
        r = 0;
fail:
        free(tmp);
        coeffs_free(&hc);
        coeffs_free(&vc);
        return r;
}

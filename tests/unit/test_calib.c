/* Unit tests of calib's histograms and clipping methods, on samples whose
 * right threshold is known: a uniform range (nothing to clip), a Gaussian
 * with a few far outliers (clip the outliers, keep the bulk), and values
 * that arrive ever larger (the bins widen without losing any). */
#include "check.h"

#include "calib.h"
#include "effnet.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* A reproducible uniform in [0, 1) (xorshift64*). */
static double uniform(uint64_t *s)
{
        *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
        return (double)((*s * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static double gaussian(uint64_t *s)
{
        double u = uniform(s), v = uniform(s);
        return sqrt(-2 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}

#define N 400000
static float xs[N];

/* The clipping threshold of h by method. */
static double clip_of(const struct calib_hist *h, int method)
{
        return calib_hist_scale(h, method) * 127.0;
}

/* The squared error of quantizing x[0..n) to s8 with threshold clip. */
static double quant_err(const float *x, int n, double clip)
{
        double s = clip / 127, e = 0;
        for (int i = 0; i < n; i++) {
                double q = fmin(127, fmax(-127, nearbyint(x[i] / s)));
                e += (x[i] - q * s) * (x[i] - q * s);
        }
        return e;
}

/* Where each method's threshold must fall on a sample ([lo, hi]; hi 0: up
 * to max's). mse's is also measured on the samples themselves: its error
 * within 3% of the least over a fine grid of thresholds. */
struct want {
        const char *name;
        double max_lo, max_hi, pc_lo, pc_hi, mse_lo, kl_lo, kl_hi;
};

static void check_methods(const float *x, int n, const struct want *w)
{
        static struct calib_hist h;
        memset(&h, 0, sizeof h);
        calib_hist_add(&h, x, (size_t)n);
        CHECK(h.count == n);
        double mx = clip_of(&h, EFFNET_CLIP_MAX), pc = clip_of(&h, EFFNET_CLIP_PERCENTILE),
               ms = clip_of(&h, EFFNET_CLIP_MSE), kl = clip_of(&h, EFFNET_CLIP_KL);
        CHECK_MSG(mx >= w->max_lo && mx <= w->max_hi, "%s: max %g", w->name, mx);
        CHECK_MSG(pc >= w->pc_lo && pc <= (w->pc_hi ? w->pc_hi : mx), "%s: percentile %g", w->name, pc);
        CHECK_MSG(ms >= w->mse_lo && ms <= mx, "%s: mse %g", w->name, ms);
        CHECK_MSG(kl >= w->kl_lo && kl <= (w->kl_hi ? w->kl_hi : mx), "%s: kl %g", w->name, kl);
        double got = quant_err(x, n, ms), best = INFINITY, at = 0;
        for (double c = mx; c > mx / 1000; c *= 0.98) {
                double e = quant_err(x, n, c);
                if (e < best)
                        best = e, at = c;
        }
        CHECK_MSG(got <= 1.03 * best, "%s: mse clip %g: error %g, the grid's least %g at %g", w->name, ms, got,
                  best, at);
}

static void test_methods(void)
{
        uint64_t s = 1;
        /* Nothing to clip: every method keeps (nearly) the whole range. */
        for (int i = 0; i < N; i++)
                xs[i] = (float)(2 * uniform(&s) - 1);
        check_methods(xs, N, &(struct want){ "uniform", 1, 1.01, 0.995, 0, 0.95, 0.9, 0 });
        /* A unit Gaussian's 99.99th percentile of |x| is 3.89; 256 levels
         * with the least squared error clip it near 4 (never under 3,
         * which would saturate 0.3% of it). */
        for (int i = 0; i < N; i++)
                xs[i] = (float)gaussian(&s);
        check_methods(xs, N, &(struct want){ "gaussian", 4, 6.5, 3.7, 4.1, 3, 2, 0 });
        /* Eight far outliers: max keeps them; percentile and kl clip them
         * and keep the Gaussian bulk (a threshold under 2 would saturate 5%
         * of it); mse weighs their saturation against rounding the rest,
         * whichever costs less on the samples. */
        for (int i = 0; i < 8; i++)
                xs[i * (N / 8)] = i % 2 ? 200.0f : -200.0f;
        check_methods(xs, N, &(struct want){ "outliers", 200, 201, 3.5, 4.5, 2, 2, 30 });
}

static void test_growing(void)
{
        static struct calib_hist h;
        float small[1000], large[1] = { -1000 };
        for (int i = 0; i < 1000; i++)
                small[i] = (float)i / 1000;
        calib_hist_add(&h, small, 1000);
        double w = h.width;
        calib_hist_add(&h, large, 1);
        CHECK(h.count == 1001);
        CHECK_MSG(h.width > w && h.width * CALIB_HIST_BINS > 1000, "width %g", h.width);
        double sum = 0;
        for (int i = 0; i < CALIB_HIST_BINS; i++)
                sum += h.bins[i];
        CHECK(sum == 1001);
        CHECK_MSG(clip_of(&h, EFFNET_CLIP_MAX) >= 1000, "max %g", clip_of(&h, EFFNET_CLIP_MAX));
        /* A histogram of zeros has no range: scale 1, never 0. */
        static struct calib_hist z;
        float zeros[4] = { 0 };
        calib_hist_add(&z, zeros, 4);
        for (int m = EFFNET_CLIP_MSE; m <= EFFNET_CLIP_KL; m++)
                CHECK_MSG(calib_hist_scale(&z, m) > 0, "method %d", m);
}

int main(void)
{
        test_methods();
        test_growing();
        return CHECK_DONE();
}

/* Unit tests of calib's histograms and clipping methods, on samples whose
 * right threshold is known: a uniform range (nothing to clip), a Gaussian
 * with a few far outliers (clip the outliers, keep the bulk), and values
 * that arrive ever larger (the bins widen without losing any). */
#include "check.h"

#include "calib.h"
#include "effnet.h"

#include <math.h>
#include <stdint.h>

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
static double clip_of(const struct calib_hist *h, int method, double unit)
{
        return calib_hist_scale(h, method) * 127.0 / unit;
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

/* mse's threshold, measured on the samples themselves: its error within 3%
 * of the least over a fine grid of thresholds up to the largest value. */
static void check_mse(const struct calib_hist *h, const float *x, int n, double mx)
{
        double got = quant_err(x, n, clip_of(h, EFFNET_CLIP_MSE, 1)), best = INFINITY, at = 0;
        for (double c = mx; c > mx / 1000; c *= 0.98) {
                double e = quant_err(x, n, c);
                if (e < best)
                        best = e, at = c;
        }
        CHECK_MSG(got <= 1.03 * best, "mse clip %g: error %g, the grid's least %g at %g",
                  clip_of(h, EFFNET_CLIP_MSE, 1), got, best, at);
}

static void test_uniform(void)
{
        static struct calib_hist h;
        uint64_t s = 1;
        for (int i = 0; i < N; i++)
                xs[i] = (float)(2 * uniform(&s) - 1);
        calib_hist_add(&h, xs, N);
        CHECK(h.count == N);
        /* Nothing to clip: every method keeps (nearly) the whole range. */
        double mx = clip_of(&h, EFFNET_CLIP_MAX, 1), pc = clip_of(&h, EFFNET_CLIP_PERCENTILE, 1),
               ms = clip_of(&h, EFFNET_CLIP_MSE, 1), kl = clip_of(&h, EFFNET_CLIP_KL, 1);
        CHECK_MSG(mx >= 1 && mx < 1.01, "max %g", mx);
        CHECK_MSG(pc > 0.995 && pc <= mx, "percentile %g", pc);
        CHECK_MSG(ms > 0.95 && ms <= mx, "mse %g", ms);
        CHECK_MSG(kl > 0.9 && kl <= mx, "kl %g", kl);
        check_mse(&h, xs, N, mx);
}

static void test_gaussian(void)
{
        static struct calib_hist h;
        uint64_t s = 3;
        for (int i = 0; i < N; i++)
                xs[i] = (float)gaussian(&s);
        calib_hist_add(&h, xs, N);
        /* A unit Gaussian's 99.99th percentile of |x| is 3.89; 256 levels
         * with the least squared error clip it near 4 (never under 3,
         * which would saturate 0.3% of it). */
        double mx = clip_of(&h, EFFNET_CLIP_MAX, 1), pc = clip_of(&h, EFFNET_CLIP_PERCENTILE, 1),
               ms = clip_of(&h, EFFNET_CLIP_MSE, 1), kl = clip_of(&h, EFFNET_CLIP_KL, 1);
        CHECK_MSG(mx > 4 && mx < 6.5, "max %g", mx);
        CHECK_MSG(pc > 3.7 && pc < 4.1, "percentile %g", pc);
        CHECK_MSG(ms > 3 && ms <= mx, "mse %g", ms);
        CHECK_MSG(kl > 2 && kl <= mx, "kl %g", kl);
        check_mse(&h, xs, N, mx);
}

static void test_outliers(void)
{
        static struct calib_hist h;
        uint64_t s = 2;
        for (int i = 0; i < N; i++)
                xs[i] = (float)gaussian(&s);
        for (int i = 0; i < 8; i++)
                xs[i * (N / 8)] = i % 2 ? 200.0f : -200.0f;
        calib_hist_add(&h, xs, N);
        /* max keeps the outliers; percentile and kl clip them and keep the
         * bulk of a unit Gaussian (its 99.99th percentile is 3.89; a
         * threshold under 2 would saturate 5% of it). mse weighs the 8
         * outliers' saturation against rounding the rest: whichever costs
         * less, checked on the samples. */
        double mx = clip_of(&h, EFFNET_CLIP_MAX, 1), pc = clip_of(&h, EFFNET_CLIP_PERCENTILE, 1),
               ms = clip_of(&h, EFFNET_CLIP_MSE, 1), kl = clip_of(&h, EFFNET_CLIP_KL, 1);
        CHECK_MSG(mx >= 200 && mx < 201, "max %g", mx);
        CHECK_MSG(pc > 3.5 && pc < 4.5, "percentile %g", pc);
        CHECK_MSG(ms > 2 && ms <= mx, "mse %g", ms);
        CHECK_MSG(kl > 2 && kl < 30, "kl %g", kl);
        check_mse(&h, xs, N, mx);
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
        CHECK_MSG(clip_of(&h, EFFNET_CLIP_MAX, 1) >= 1000, "max %g", clip_of(&h, EFFNET_CLIP_MAX, 1));
        /* A histogram of zeros has no range: scale 1, never 0. */
        static struct calib_hist z;
        float zeros[4] = { 0 };
        calib_hist_add(&z, zeros, 4);
        for (int m = EFFNET_CLIP_MSE; m <= EFFNET_CLIP_KL; m++)
                CHECK_MSG(calib_hist_scale(&z, m) > 0, "method %d", m);
}

int main(void)
{
        test_uniform();
        test_gaussian();
        test_outliers();
        test_growing();
        return CHECK_DONE();
}

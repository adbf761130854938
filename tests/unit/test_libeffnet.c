/* Unit tests of libeffnet's public image API, linked against the shared
 * library alone (so also a check that it exports what the headers declare):
 * formats, limits from the options, error codes, outputs untouched on
 * failure, and prepare = decode + preprocess; and its seeded weights.
 *
 *   test_libeffnet CORPUS_DIR   (tests/fuzz/corpus: jpeg/ and png/ files) */
#include "check.h"

#include <effnet.h>
#include <effnet/image.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned char *slurp(const char *dir, const char *name, size_t *ret_len)
{
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        FILE *f = fopen(path, "rb");
        REQUIRE(f);
        unsigned char *buf = malloc(1 << 20);
        REQUIRE(buf);
        *ret_len = fread(buf, 1, 1 << 20, f);
        fclose(f);
        return buf;
}

/* Timm's defaults for a small model: 32 px, bicubic, center crop. */
static const struct effnet_preproc pp = {
        .size = 32, .resize = EFFNET_RESIZE_BICUBIC, .crop = EFFNET_CROP_CENTER, .crop_pct = 0.875f,
        .mean = { 0.485f, 0.456f, 0.406f }, .std = { 0.229f, 0.224f, 0.225f },
};
#define FLOATS (3 * 32 * 32)

static void test_file(const char *dir, const char *name, int format, int width, int height)
{
        char err[256];
        size_t len;
        unsigned char *data = slurp(dir, name, &len);
        struct effnet_image_info info = { -1, -1, -1 };
        struct effnet_image *img = NULL;
        static float a[FLOATS], b[FLOATS];

        CHECK_MSG(effnet_image_format(data, len) == format, "%s: format", name);
        CHECK_MSG(effnet_image_probe(data, len, NULL, err, sizeof err, &info) == 0, "%s: %s", name, err);
        CHECK_MSG(info.format == format && info.width == width && info.height == height, "%s: %dx%d format %d",
                  name, info.width, info.height, info.format);

        /* Every limit of the options is one the header is checked against. */
        struct effnet_image_opts tight[] = {
                { .max_width = width - 1 }, { .max_height = height - 1 },
                { .max_pixels = (int64_t)width * height - 1 }, { .max_bytes = len - 1 },
        };
        for (size_t i = 0; i < sizeof tight / sizeof tight[0]; i++) {
                struct effnet_image_info untouched = { -1, -1, -1 };
                CHECK_MSG(effnet_image_probe(data, len, &tight[i], err, sizeof err, &untouched) == -E2BIG &&
                          untouched.width == -1, "%s: limit %zu", name, i);
                CHECK_MSG(effnet_image_decode(data, len, &tight[i], err, sizeof err, &img) == -E2BIG && !img,
                          "%s: decode limit %zu", name, i);
                a[0] = 42.0f;
                CHECK_MSG(effnet_image_prepare(data, len, &tight[i], &pp, err, sizeof err, a) == -E2BIG &&
                          a[0] == 42.0f, "%s: prepare limit %zu", name, i);
        }
        struct effnet_image_opts exact = { .max_width = width, .max_height = height,
                                           .max_pixels = (int64_t)width * height, .max_bytes = len };
        CHECK_MSG(effnet_image_probe(data, len, &exact, err, sizeof err, &info) == 0, "%s: at the limits: %s", name,
                  err);

        REQUIRE(effnet_image_decode(data, len, NULL, err, sizeof err, &img) == 0);
        int w = 0, h = 0;
        const uint8_t *rgb = effnet_image_rgb(img, &w, &h);
        CHECK(rgb && w == width && h == height);
        CHECK(effnet_image_rgb(img, NULL, NULL) == rgb);
        REQUIRE(effnet_image_preprocess(img, &pp, err, sizeof err, a) == 0);
        REQUIRE(effnet_image_prepare(data, len, NULL, &pp, err, sizeof err, b) == 0);
        CHECK_MSG(memcmp(a, b, sizeof a) == 0, "%s: prepare = decode + preprocess", name);
        /* (0 - mean) / std .. (1 - mean) / std */
        int in_range = 1;
        for (int i = 0; i < FLOATS; i++)
                in_range &= isfinite(a[i]) && a[i] >= -2.2f && a[i] <= 2.7f;
        CHECK_MSG(in_range, "%s: normalized values", name);

        struct effnet_preproc bad = pp;
        bad.size = 0;
        b[0] = 42.0f;
        CHECK(effnet_image_preprocess(img, &bad, err, sizeof err, b) == -EINVAL && b[0] == 42.0f);
        bad = pp;
        bad.std[1] = 0;
        CHECK(effnet_image_prepare(data, len, NULL, &bad, err, sizeof err, b) == -EINVAL && b[0] == 42.0f);
        CHECK(effnet_image_free(img) == NULL);

        /* Cut short: corrupt, never a crash. */
        img = NULL;
        int r = effnet_image_decode(data, len / 2, NULL, err, sizeof err, &img);
        CHECK_MSG(r == -EBADMSG && !img, "%s: truncated: %d", name, r);
        free(data);
}

static unsigned char *whole(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "rb");
        REQUIRE(f);
        REQUIRE(fseek(f, 0, SEEK_END) == 0);
        long n = ftell(f);
        REQUIRE(n > 0);
        rewind(f);
        unsigned char *buf = malloc((size_t)n);
        REQUIRE(buf && fread(buf, 1, (size_t)n, f) == (size_t)n);
        fclose(f);
        *ret_len = (size_t)n;
        return buf;
}

/* Seeded weights: the same bytes for the same arguments, read back with
 * their seed, classes, scheme and dtype; bad options refused (test_model
 * checks that another seed gives other weights). */
static void test_seeded(void)
{
        const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        char p1[512], p2[512], err[256] = "";
        struct effnet_seeded_opts so = { .scheme = EFFNET_SCHEME_TORCHVISION, .classes = 3,
                                         .dtype = EFFNET_DTYPE_BF16 };
        struct effnet_model *m = NULL;
        size_t n1, n2;

        snprintf(p1, sizeof p1, "%s/test_libeffnet_%d_1.safetensors", dir, (int)getpid());
        snprintf(p2, sizeof p2, "%s/test_libeffnet_%d_2.safetensors", dir, (int)getpid());
        CHECK_MSG(effnet_seeded_write(p1, "b0", 42, &so, err, sizeof err) == 0, "%s", err);
        CHECK_MSG(effnet_seeded_write(p2, "b0", 42, &so, err, sizeof err) == 0, "%s", err);
        unsigned char *a = whole(p1, &n1), *b = whole(p2, &n2);
        CHECK(n1 == n2 && memcmp(a, b, n1) == 0);
        free(a);
        free(b);

        CHECK_MSG(effnet_model_open(p1, NULL, err, sizeof err, &m) == 0, "%s", err);
        if (m) {
                const struct effnet_info *i = effnet_model_info(m);
                CHECK_EQ(i->seed, 42);
                CHECK_EQ(i->classes, 3);
                CHECK_EQ(i->scheme, EFFNET_SCHEME_TORCHVISION);
                CHECK(strcmp(i->dtype, "BF16") == 0 && strcmp(i->variant, "efficientnetv2-b0") == 0);
        }
        m = effnet_model_free(m);

        struct effnet_seeded_opts bad = so;
        bad.dtype = 3;
        CHECK(effnet_seeded_write(p2, "b0", 1, &bad, err, sizeof err) == -EINVAL);
        CHECK_CONTAINS(err, "dtype");
        bad = so;
        bad.scheme = 2;
        CHECK(effnet_seeded_write(p2, "b0", 1, &bad, err, sizeof err) == -EINVAL);
        bad = so;
        bad.gain = -1;
        CHECK(effnet_seeded_write(p2, "b0", 1, &bad, err, sizeof err) == -EINVAL);
        bad = so;
        bad.classes = 100001;
        CHECK(effnet_seeded_write(p2, "b0", 1, &bad, err, sizeof err) == -EINVAL);
        CHECK(effnet_seeded_write(p2, "q9", 1, NULL, err, sizeof err) == -EINVAL);
        CHECK_CONTAINS(err, "q9");
        CHECK(effnet_seeded_write(p2, NULL, 1, NULL, err, sizeof err) == -EINVAL);
        unlink(p1);
        unlink(p2);

        float x[2][3 * 8 * 8], y[3 * 8 * 8];
        effnet_smooth_images(5, 2, 8, &x[0][0]);
        effnet_smooth_images(5, 1, 8, y);
        CHECK(memcmp(x[0], y, sizeof y) == 0);
        CHECK(memcmp(x[0], x[1], sizeof y) != 0);
        effnet_smooth_images(6, 1, 8, y);
        CHECK(memcmp(x[0], y, sizeof y) != 0);
}

int main(int argc, char **argv)
{
        char err[256] = "";
        struct effnet_image *img = NULL;
        struct effnet_image_info info = { -1, -1, -1 };
        static const char text[] = "GIF89a, not a JPEG or PNG";

        REQUIRE(argc == 2);
        CHECK(effnet_image_format(text, sizeof text) == EFFNET_IMAGE_UNKNOWN);
        CHECK(effnet_image_probe(text, sizeof text, NULL, err, sizeof err, &info) == -ENOTSUP && info.width == -1);
        CHECK(effnet_image_decode(text, sizeof text, NULL, err, sizeof err, &img) == -ENOTSUP && !img);
        CHECK_MSG(strlen(err) > 0, "a message for an unknown format");
        CHECK(effnet_image_free(NULL) == NULL);

        test_file(argv[1], "jpeg/baseline_420_64x48.jpg", EFFNET_IMAGE_JPEG, 64, 48);
        test_file(argv[1], "png/rgb8_8x6.png", EFFNET_IMAGE_PNG, 8, 6);
        test_seeded();
        return CHECK_DONE();
}

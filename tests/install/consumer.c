/* consumer: a program built against the installed libeffnet alone (its
 * headers, effnet.pc and the shared library): classifies images with the
 * public API and prints "PATH INDEX SCORE" (top-1, softmax) per image.
 *
 *   consumer WEIGHTS IMG...
 *
 * Each image goes through effnet_image_prepare and, separately, through
 * effnet_image_probe, effnet_image_decode and effnet_image_preprocess; the
 * two inputs must be the same floats. Exit 0, or 1 on any failure. */
#include <effnet.h>
#include <effnet/image.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The bytes of a file (at most max) into *ret_data, the caller's. */
static int read_all(const char *path, size_t max, unsigned char **ret_data, size_t *ret_len)
{
        FILE *f = fopen(path, "rb");
        unsigned char *buf = NULL;
        size_t len = 0;
        int r = -1;

        if (!f)
                return -1;
        buf = malloc(max + 1);
        if (!buf)
                goto out;
        len = fread(buf, 1, max + 1, f);
        if (ferror(f) || len > max)
                goto out;
        *ret_data = buf;
        *ret_len = len;
        buf = NULL;
        r = 0;
out:
        free(buf);
        fclose(f);
        return r;
}

/* Top-1 of one image, or -1 with a message on stderr. */
static int classify(struct effnet_exec *x, const struct effnet_info *info, const char *path, float *input,
                    float *check, float *logits)
{
        char err[256];
        unsigned char *data = NULL;
        size_t len = 0, floats = (size_t)3 * (size_t)info->preproc.size * (size_t)info->preproc.size;
        struct effnet_image *img = NULL;
        struct effnet_image_info ii;
        int w = 0, h = 0, top = -1, r = -1;

        if (read_all(path, EFFNET_IMAGE_MAX_BYTES, &data, &len) < 0) {
                fprintf(stderr, "consumer: %s: cannot read\n", path);
                return -1;
        }
        if (effnet_image_prepare(data, len, NULL, &info->preproc, err, sizeof err, input) < 0 ||
            effnet_image_probe(data, len, NULL, err, sizeof err, &ii) < 0 ||
            effnet_image_decode(data, len, NULL, err, sizeof err, &img) < 0 ||
            effnet_image_preprocess(img, &info->preproc, err, sizeof err, check) < 0) {
                fprintf(stderr, "consumer: %s: %s\n", path, err);
                goto out;
        }
        const unsigned char *rgb = effnet_image_rgb(img, &w, &h);
        if (!rgb || w != ii.width || h != ii.height || ii.format == EFFNET_IMAGE_UNKNOWN ||
            ii.format != effnet_image_format(data, len)) {
                fprintf(stderr, "consumer: %s: probe says %dx%d format %d, decode %dx%d\n", path, ii.width,
                        ii.height, ii.format, w, h);
                goto out;
        }
        if (memcmp(input, check, floats * sizeof *input) != 0) {
                fprintf(stderr, "consumer: %s: prepare and decode + preprocess differ\n", path);
                goto out;
        }
        if (effnet_exec_forward(x, input, 1, logits) < 0) {
                fprintf(stderr, "consumer: %s: forward failed\n", path);
                goto out;
        }
        effnet_softmax(logits, info->classes);
        if (effnet_topk(logits, info->classes, 1, &top) != 1)
                goto out;
        printf("%s %d %.6f\n", path, top, (double)logits[top]);
        r = 0;
out:
        effnet_image_free(img);
        free(data);
        return r;
}

int main(int argc, char **argv)
{
        char err[256];
        struct effnet_model *m = NULL;
        struct effnet_exec *x = NULL;
        float *input = NULL, *check = NULL, *logits = NULL;
        int failed = 0;

        if (argc < 3) {
                fprintf(stderr, "Usage: consumer WEIGHTS IMG...\n");
                return 2;
        }
        if (effnet_model_open(argv[1], NULL, err, sizeof err, &m) < 0) {
                fprintf(stderr, "consumer: %s\n", err);
                return 1;
        }
        const struct effnet_info *info = effnet_model_info(m);
        struct effnet_exec_opts eo = { .batch = 1, .threads = 0, .precision = EFFNET_FP32 };
        if (effnet_exec_new(m, &eo, err, sizeof err, &x) < 0) {
                fprintf(stderr, "consumer: %s\n", err);
                failed = 1;
                goto out;
        }
        size_t floats = (size_t)3 * (size_t)info->preproc.size * (size_t)info->preproc.size;
        input = malloc(floats * sizeof *input);
        check = malloc(floats * sizeof *check);
        logits = malloc((size_t)info->classes * sizeof *logits);
        if (!input || !check || !logits) {
                failed = 1;
                goto out;
        }
        for (int i = 2; i < argc; i++)
                if (classify(x, info, argv[i], input, check, logits) < 0)
                        failed = 1;
out:
        free(input);
        free(check);
        free(logits);
        effnet_exec_free(x);
        effnet_model_free(m);
        return failed;
}

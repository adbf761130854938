/* Fuzz target for the v2 infer request parser, binary framing included: the
 * input's first line is the Inference-Header-Content-Length value ("-" for
 * none), the rest is the body. Any input must parse, or fail with a known
 * code and a message; a parsed request must be within its limits, its
 * images inside the body or its own storage, its logits judged, and
 * answerable. */
#include "v2.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SIZE 2      /* a tiny model keeps FP32 inputs small: [N,3,2,2] */
#define CLASSES 10

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct api_labels *labels;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const int exec_batch[] = { 1, 2 };
        struct v2_limits lim = { .max_images = 4, .max_image_bytes = 64 };
        struct v2_request *r = NULL;
        char line[32], err[256];
        const uint8_t *nl = memchr(data, '\n', size < sizeof line ? size : sizeof line - 1);
        int64_t header_len = -1;

        if (!labels && api_labels_load(NULL, CLASSES, NULL, 0, &labels) < 0)
                abort();
        if (!nl)
                return 0;
        memcpy(line, data, (size_t)(nl - data));
        line[nl - data] = '\0';
        if (strcmp(line, "-") != 0) {
                char *end;
                header_len = strtoll(line, &end, 10);
                if (end == line || *end || header_len < 0)
                        return 0;
        }
        /* The body in an exact-size buffer, so that the sanitizers catch reads past its end. */
        size_t len = size - (size_t)(nl - data) - 1;
        uint8_t *body = malloc(len ? len : 1);
        if (!body)
                return 0;
        memcpy(body, nl + 1, len);
        struct v2_model m = { .name = "fuzz", .size = SIZE, .classes = CLASSES, .max_batch = 2, .max_delay_us = 0,
                              .exec_batch = exec_batch, .n_exec = 2, .labels = labels };
        memset(err, 'x', sizeof err);
        int ret = v2_parse_infer(body, len, header_len, &m, &lim, err, sizeof err, &r);
        if (ret < 0) {
                if ((ret != -EBADMSG && ret != -E2BIG && ret != -ENOMEM) || r || !memchr(err, '\0', sizeof err) ||
                    !err[0])
                        abort();
                free(body);
                return 0;
        }
        if (!r || r->n < 1 || r->n > lim.max_images || r->classification < 0 || r->classification > CLASSES)
                abort();
        if (r->datatype == V2_FP32) {
                if (!r->tensor)
                        abort();
                volatile float sum = 0;
                for (size_t i = 0; i < (size_t)r->n * 3 * SIZE * SIZE; i++)
                        sum += r->tensor[i];
                (void)sum;
        } else {
                for (int i = 0; i < r->n; i++) {
                        const struct v2_image *im = &r->images[i];
                        bool in_body = im->data >= body && im->data + im->len <= body + len;
                        if (im->len > lim.max_image_bytes || (!in_body && !r->decoded))
                                abort();
                        volatile uint8_t x = 0;
                        for (size_t k = 0; k < im->len; k++)
                                x ^= im->data[k];
                        (void)x;
                }
        }
        float logits[4 * CLASSES];
        for (int i = 0; i < 4 * CLASSES; i++)
                logits[i] = (float)(i % 7);
        /* Finite logits pass; an infinite one is the client's or the weights'. */
        if (v2_check_logits(&m, r, logits, err, sizeof err) != 0)
                abort();
        logits[CLASSES * (r->n - 1)] = INFINITY;
        int verdict = v2_check_logits(&m, r, logits, err, sizeof err);
        if (verdict != -EDOM && (verdict != -ERANGE || r->datatype != V2_FP32 || !memchr(err, '\0', sizeof err)))
                abort();
        logits[CLASSES * (r->n - 1)] = 0;
        char *answer = NULL;
        size_t alen = 0, hlen = 0;
        if (v2_infer_body(&m, r, logits, &answer, &alen, &hlen) == 0 && (hlen > alen || memchr(answer, 0, hlen) || answer[alen] != 0))
                abort();
        free(answer);
        v2_request_free(r);
        free(body);
        return 0;
}

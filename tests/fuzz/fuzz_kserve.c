/* Fuzz target for the ModelInferRequest parser (protobuf-c, then the
 * model's input): any input must parse, or fail with a known code and a
 * message; a parsed request must be within its limits and answerable; and
 * every byte the parse charged must come back when it is freed. */
#include "kserve.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE 2      /* a tiny model keeps FP32 inputs small: [N,3,2,2] */
#define CLASSES 10

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One model, "fuzz", version 1 (or none given). */
static int resolve(void *ud, const char *name, const char *version, const struct v2_model **ret_model, char *err,
                   size_t err_len)
{
        if (strcmp(name, "fuzz") != 0 || (version[0] && strcmp(version, "1") != 0)) {
                snprintf(err, err_len, "unknown model");
                return -ENOENT;
        }
        *ret_model = ud;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const int exec_batch[] = { 1, 2 };
        static struct api_labels *labels;
        static struct budget *b;
        struct v2_limits lim = { .max_images = 4, .max_image_bytes = 64 };
        struct v2_request *r = NULL;
        const struct v2_model *got = NULL;
        char err[256];

        if (!labels && api_labels_load(NULL, CLASSES, NULL, 0, &labels) < 0)
                abort();
        if (!b) {
                struct budget_opts bo = { .total = 64 << 20, .client_share = 64 << 20 };
                if (budget_new(&bo, &b) < 0)
                        abort();
        }
        /* The message in an exact-size buffer, so that the sanitizers catch reads past its end. */
        uint8_t *msg = malloc(size ? size : 1);
        if (!msg)
                return 0;
        if (size)
                memcpy(msg, data, size);
        struct v2_model m = { .name = "fuzz", .version = 1, .size = SIZE, .classes = CLASSES, .max_batch = 2, .max_delay_us = 0,
                              .exec_batch = exec_batch, .n_exec = 2, .labels = labels };
        memset(err, 'x', sizeof err);
        int ret = kserve_parse_infer(msg, size, resolve, &m, &lim, b, NULL, err, sizeof err, &r, &got);
        free(msg);
        struct budget_stats st;
        if (ret < 0) {
                budget_stats_snapshot(b, &st);
                if ((ret != -EBADMSG && ret != -E2BIG && ret != -ENOENT && ret != -ENOMEM) || r || got ||
                    !memchr(err, '\0', sizeof err) || !err[0] || st.used != 0)
                        abort();
                return 0;
        }
        if (!r || got != &m || r->n < 1 || r->n > lim.max_images || r->classification < 0 ||
            r->classification > CLASSES || (r->datatype == V2_FP32) != (r->tensor != NULL) ||
            (r->datatype == V2_BYTES && !r->images))
                abort();
        for (int i = 0; r->datatype == V2_BYTES && i < r->n; i++)
                if (r->images[i].len > lim.max_image_bytes || (r->images[i].len && !r->images[i].data))
                        abort();
        float logits[4 * CLASSES];
        for (int i = 0; i < r->n * CLASSES; i++)
                logits[i] = (float)(i % 7) - 3.0f;
        uint8_t *resp = NULL;
        size_t resp_len = 0;
        if (kserve_infer_response(&m, r, logits, &resp, &resp_len) == 0)
                free(resp);
        kserve_request_free(r, &m, b, NULL);
        budget_stats_snapshot(b, &st);
        if (st.used != 0)
                abort();
        return 0;
}

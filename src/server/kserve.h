/* kserve: the KServe v2 / Open Inference Protocol gRPC service
 * (inference.GRPCInferenceService, src/server/kserve.proto) on the h2
 * server (server/h2.h): ServerLive, ServerReady, ModelReady,
 * ServerMetadata, ModelMetadata, ModelInfer, and Triton's ModelConfig and
 * ModelStreamInfer (one answer per request, in the order they complete).
 * The only module that includes the protobuf-c messages.
 *
 * The model is the one /v2 describes (server/v2.h): input "input", FP32
 * [-1,3,H,W] as typed contents (fp32_contents) or raw_input_contents
 * (little-endian), or BYTES [N] of encoded images (bytes_contents, or raw
 * as 4-byte little-endian lengths and bytes) decoded as REST decodes them;
 * output "probabilities", FP32 [N,classes] as raw_output_contents, or with
 * the output's parameter "classification" = K, BYTES [N,K] strings
 * "score:index:label". Errors: INVALID_ARGUMENT (bad request), NOT_FOUND
 * (unknown model or version, unknown output), RESOURCE_EXHAUSTED (a limit,
 * the memory budget), UNAVAILABLE (queue full, draining), DEADLINE_EXCEEDED,
 * UNAUTHENTICATED (the authorize hook refused), INTERNAL.
 *
 *   struct kserve_opts o = { .h2 = {...}, .backend = {...}, ... };
 *   kserve_new(&o, err, sizeof err, &k);
 *   kserve_drain(k); ... while (kserve_inflight(k)) wait; ... k = kserve_free(k);
 */
#ifndef EFFNET_SERVER_KSERVE_H
#define EFFNET_SERVER_KSERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "budget.h"
#include "grpc_stats.h"
#include "h2.h"
#include "v2.h"

struct generation;
struct kserve_infer;

/* What the service needs of the rest of the daemon. Any thread. */
struct kserve_backend {
        /* The model generation serving now: a reference, given back with
         * gen_put. Never NULL while the server runs. */
        struct generation *(*gen_get)(void *userdata);
        void (*gen_put)(void *userdata, struct generation *g);
        /* Serving and not draining (ServerReady, ModelReady). */
        bool (*ready)(void *userdata);
        /* Runs the images of job (its tensors, or its encoded images to be
         * decoded first) through the daemon's request pipeline: decoding
         * pool, then the batcher of job's generation, with the daemon's
         * limits. 0: kserve_infer_done(job, status) follows exactly once
         * (any thread); < 0: it never does (-EAGAIN: queue full,
         * -ESHUTDOWN: stopping). */
        int (*submit)(void *userdata, struct kserve_infer *job);
        /* API keys: 0 lets a call in, < 0 refuses it (UNAUTHENTICATED).
         * authorization: the call's "authorization" metadata, NULL when
         * absent. Health RPCs (ServerLive, ServerReady) skip it. NULL: no
         * keys. */
        int (*authorize)(void *userdata, const char *authorization);
        /* One answered call (any thread). NULL: none. */
        void (*access_log)(void *userdata, const struct http_access *a);
        void *userdata;
};

struct kserve_opts {
        struct h2_opts h2;           /* listener and limits; handler and userdata are the service's */
        struct kserve_backend backend;
        int max_images;              /* per infer request */
        size_t max_image_bytes;      /* one encoded image of a BYTES input */
        int64_t deadline_ms;         /* per infer request, from its message (grpc-timeout may cut it) */
        int64_t max_client_share;    /* of the budget, per client address (413-like refusals) */
};

/* One infer request on its way through the pipeline: what submit gets. */
struct kserve_infer {
        struct generation *g;        /* a reference, for the request's life */
        struct v2_request *req;      /* parsed: n, datatype, tensor ([n][3][H][W]) or images */
        float *logits;               /* [n][classes], allocated and charged by the service */
        int64_t deadline_ns;         /* CLOCK_MONOTONIC */
        struct budget_client *client;   /* whom to charge what the pipeline allocates (tensors of BYTES) */
        /* Written by the pipeline before kserve_infer_done, for the log. */
        int64_t queue_ns, forward_ns;
        int batch_size;
        char err[256];               /* the pipeline's message with a failing status */
        void *pipeline;              /* the pipeline's own */
};

/* The pipeline's completion: status 0 (logits written), -ETIMEDOUT, -EIO,
 * -EAGAIN, -ESHUTDOWN, -E2BIG/-EBADMSG/-ENOTSUP (an image: job->err
 * says), -ENOBUFS/-EDQUOT (budget). Any thread. */
void kserve_infer_done(struct kserve_infer *job, int status);

struct kserve;

int kserve_new(const struct kserve_opts *opts, char *err, size_t err_len, struct kserve **ret);
/* Closes every connection (open calls are cancelled). Call when
 * kserve_pending() is 0. Accepts NULL; returns NULL. */
struct kserve *kserve_free(struct kserve *k);
const char *kserve_url(const struct kserve *k);
void kserve_drain(struct kserve *k);
/* Calls open (taken and not finished), idle streams included. */
int kserve_inflight(struct kserve *k);
/* Infer requests between their message and their answer: the ones that
 * hold the model and the pipeline. kserve_free needs 0. */
int kserve_pending(struct kserve *k);
void kserve_stats_snapshot(struct kserve *k, struct grpc_stats *ret_stats);

/* ---- pure parts (unit tests, fuzzing) ---------------------------------------------- */

/* A ModelInferRequest message of len bytes for model m, within lim, into a
 * v2_request (its tensor, or its images pointing into the request's own
 * copies), with every allocation of the parse charged to budget b and
 * client c first. model_name/version checked by the caller. Errors, with a
 * message for the client in err: -EBADMSG (malformed, or not the model's
 * input: INVALID_ARGUMENT), -ENOENT (an unknown output: NOT_FOUND), -E2BIG
 * (a limit), -ENOBUFS/-EDQUOT (the budget), -ENOMEM. ret_model and
 * ret_version get the model name and version asked for ("" when none),
 * owned by the caller (free), not charged: they are copies of at most the
 * message, which the transport holds charged meanwhile. */
int kserve_parse_infer(const uint8_t *msg, size_t len, const struct v2_model *m, const struct v2_limits *lim,
                       struct budget *b, struct budget_client *c, char *err, size_t err_len,
                       struct v2_request **ret_request, char **ret_model, char **ret_version);

/* Frees a request of kserve_parse_infer and releases its charges to b
 * and c (those given to the parse; a tensor set by the pipeline counts as
 * charged to them too). Accepts NULL. */
void kserve_request_free(struct v2_request *r, const struct v2_model *m, struct budget *b, struct budget_client *c);

/* The ModelInferResponse for r from its logits [r->n][classes] (turned
 * into probabilities in place), serialized into *ret_msg (malloc'd, owned
 * by the caller). -EDOM (non-finite logits), -ENOMEM. */
int kserve_infer_response(const struct v2_model *m, const struct v2_request *r, float *logits, uint8_t **ret_msg,
                          size_t *ret_len);

#endif

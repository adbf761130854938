/* kserve: the KServe v2 / Open Inference Protocol gRPC service
 * (inference.GRPCInferenceService, src/server/kserve.proto) on the h2
 * server (server/h2.h): ServerLive, ServerReady, ModelReady,
 * ServerMetadata, ModelMetadata, ModelInfer, and Triton's ModelConfig and
 * ModelStreamInfer (one answer per request, in the order they complete).
 * The only module that includes the protobuf-c messages.
 *
 * Requests go through the daemon's request pipeline (server/pipeline.h),
 * as REST's do: the same model versions (by name and version), worker
 * pool, batchers, memory budget and limits. Each model is the one /v2
 * describes (server/v2.h): input "input", FP32
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

struct pipeline;

/* What the service needs of the rest of the daemon besides the pipeline. */
struct kserve_backend {
        /* Serving and not draining (ServerReady, ModelReady). Any thread. */
        bool (*ready)(void *userdata);
        /* API keys: 0 lets a call in, < 0 refuses it (UNAUTHENTICATED).
         * authorization: the call's "authorization" metadata, NULL when
         * absent. Health RPCs (ServerLive, ServerReady) skip it. NULL: no
         * keys. Any thread. */
        int (*authorize)(void *userdata, const char *authorization);
        /* One answered request (any thread). NULL: none. */
        void (*access_log)(void *userdata, const struct http_access *a);
        void *userdata;
};

struct kserve_opts {
        struct h2_opts h2;           /* listener and limits; budget, handler and userdata are the service's */
        struct pipeline *pipe;       /* requests' work (not owned): model versions, worker pool, batchers,
                                      * memory budget, limits per request */
        struct kserve_backend backend;
};

struct kserve;

int kserve_new(const struct kserve_opts *opts, char *err, size_t err_len, struct kserve **ret);
/* Closes every connection (open calls are cancelled). Call when
 * kserve_pending() is 0, before the pipeline goes. Accepts NULL; returns NULL. */
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

/* The model a request names (model_name, model_version: "" when absent):
 * 0 and *ret_model, or -ENOENT (no such model or version) with a message
 * in err. */
typedef int (*kserve_resolve_fn)(void *userdata, const char *name, const char *version,
                                 const struct v2_model **ret_model, char *err, size_t err_len);

/* A ModelInferRequest message of len bytes, for the model resolve names,
 * within lim, into a v2_request (its tensor, or its images pointing into
 * the request's own copy of them), with every allocation of the parse
 * charged to budget b and client c first. Errors, with a message for the
 * client in err: -EBADMSG (malformed, or not the model's input:
 * INVALID_ARGUMENT), -ENOENT (an unknown model, version or output:
 * NOT_FOUND), -E2BIG (a limit), -ENOBUFS/-EDQUOT (the budget), -ENOMEM.
 * *ret_model: the model resolved. */
int kserve_parse_infer(const uint8_t *msg, size_t len, kserve_resolve_fn resolve, void *resolve_userdata,
                       const struct v2_limits *lim, struct budget *b, struct budget_client *c, char *err,
                       size_t err_len, struct v2_request **ret_request, const struct v2_model **ret_model);

/* Frees a request of kserve_parse_infer and releases its charges to b
 * and c (those given to the parse; set r->tensor to NULL once it is
 * handed on with its charge). Accepts NULL. */
void kserve_request_free(struct v2_request *r, const struct v2_model *m, struct budget *b, struct budget_client *c);

/* The ModelInferResponse for r from its logits [r->n][classes] (turned
 * into probabilities in place), serialized into *ret_msg (malloc'd, owned
 * by the caller). -EDOM (non-finite logits), -ENOMEM. */
int kserve_infer_response(const struct v2_model *m, const struct v2_request *r, float *logits, uint8_t **ret_msg,
                          size_t *ret_len);

#endif

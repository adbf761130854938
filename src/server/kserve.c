/* kserve: the KServe v2 gRPC service: protobuf <-> the daemon's requests. */
#include "kserve.h"
#include "generation.h"
#include "kserve.pb-c.h"
#include "pipeline.h"
#include "registry.h"
#include "trace.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVICE "/inference.GRPCInferenceService/"
/* What an answer of k classification strings or of every class's
 * probability can take besides its strings or floats. */
#define ANSWER_FIXED_MAX 1024
#define ANSWER_STRING_MAX 528          /* one "score:index:label" (labels are cut at 500) + its length */
/* The parse's own allocations carry their size, so that frees release
 * the charge. */
#define ALLOC_HEADER 16

struct kserve {
        struct kserve_opts opts;
        struct h2_server *h2;
        struct pipeline *pipe;       /* borrowed */
        struct registry *reg;        /* the pipeline's */
        struct budget *budget;       /* the pipeline's */
        atomic_ullong requests[GRPC_N_METHODS][GRPC_N_CODES];
        atomic_ullong micros[GRPC_N_METHODS];
        atomic_ullong images;
        atomic_ullong id_seq;
        atomic_int pending;          /* infer requests between parse and answer */
};

static const struct {
        const char *name;
        enum grpc_method method;
        bool stream;        /* ModelStreamInfer: many messages, one answer each */
        bool open;          /* no key needed: health probes */
} methods[] = {
        { "ServerLive", GRPC_SERVER_LIVE, false, true },
        { "ServerReady", GRPC_SERVER_READY, false, true },
        { "ModelReady", GRPC_MODEL_READY, false, false },
        { "ServerMetadata", GRPC_SERVER_METADATA, false, false },
        { "ModelMetadata", GRPC_MODEL_METADATA, false, false },
        { "ModelInfer", GRPC_MODEL_INFER, false, false },
        { "ModelStreamInfer", GRPC_MODEL_STREAM_INFER, true, false },
        { "ModelConfig", GRPC_MODEL_CONFIG, false, false },
};

/* One call. Freed when it is finished and none of its requests is in the
 * pipeline. */
struct ks_call {
        struct kserve *k;
        struct h2_call *call;
        enum grpc_method method;
        bool stream;
        char request_id[129];         /* x-request-id, or one made up */
        struct trace_ctx trace;      /* W3C trace context: the caller's trace, or one started here */
        pthread_mutex_t lock;        /* guards the fields below */
        int pending;                 /* requests in the pipeline */
        int messages;
        bool ended;                  /* the client sent everything */
        bool cancelled;              /* the client is gone: answers are dropped */
        bool finished;               /* h2_call_finish was called */
};

/* One infer request on its way through the pipeline. */
struct ks_req {
        struct ks_call *kc;
        struct pipe_req *pr;         /* owned: the model version, the budget account, the work */
        struct v2_request *req;      /* parsed; BYTES images in its own storage, charged to pr's account */
        const struct v2_model *m;    /* of pr's model version */
        int64_t start_ns;
        size_t in_bytes;
};

/* ---- the parse's memory, charged ------------------------------------------------------ */

struct charged_alloc {
        struct budget *b;
        struct budget_client *c;
        int refused;                 /* the charge that failed: -ENOBUFS or -EDQUOT; 0 */
};

static void *ca_alloc(void *ud, size_t size)
{
        struct charged_alloc *a = ud;
        int r;

        if (size > SIZE_MAX - ALLOC_HEADER)
                return NULL;
        if ((r = budget_charge(a->b, a->c, (int64_t)(size + ALLOC_HEADER))) < 0) {
                a->refused = r;
                return NULL;
        }
        unsigned char *p = malloc(size + ALLOC_HEADER);
        if (!p) {
                budget_release(a->b, a->c, (int64_t)(size + ALLOC_HEADER));
                return NULL;
        }
        memcpy(p, &size, sizeof size);
        return p + ALLOC_HEADER;
}

static void ca_free(void *ud, void *ptr)
{
        struct charged_alloc *a = ud;
        size_t size;

        if (!ptr)
                return;
        unsigned char *p = (unsigned char *)ptr - ALLOC_HEADER;
        memcpy(&size, p, sizeof size);
        free(p);
        budget_release(a->b, a->c, (int64_t)(size + ALLOC_HEADER));
}

/* Charges bytes, then allocates them (zeroed); NULL with *ret_err set. */
static void *charged_calloc(struct budget *b, struct budget_client *c, size_t bytes, int *ret_err)
{
        int r = budget_charge(b, c, (int64_t)bytes);
        if (r < 0) {
                *ret_err = r;
                return NULL;
        }
        void *p = calloc(1, bytes ? bytes : 1);
        if (!p) {
                budget_release(b, c, (int64_t)bytes);
                *ret_err = -ENOMEM;
        }
        return p;
}

/* ---- ModelInferRequest -> v2_request ---------------------------------------------------- */

static int bad(char *err, size_t err_len, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int bad(char *err, size_t err_len, int code, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
        return code;
}

static const Inference__InferParameter *param_get(Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry **p,
                                                  size_t n, const char *key)
{
        for (size_t i = 0; i < n; i++)
                if (p[i]->key && strcmp(p[i]->key, key) == 0)
                        return p[i]->value;
        return NULL;
}

/* The requested outputs: only "probabilities", with its "classification". */
static int parse_outputs(const Inference__ModelInferRequest *q, const struct v2_model *m, struct v2_request *r,
                         char *err, size_t err_len)
{
        if (q->n_outputs > 1)
                return bad(err, err_len, -EBADMSG, "model '%s' has one output ('%s'); the request asks for %zu",
                           m->name, V2_OUTPUT_NAME, q->n_outputs);
        for (size_t i = 0; i < q->n_outputs; i++) {
                const Inference__ModelInferRequest__InferRequestedOutputTensor *o = q->outputs[i];
                if (!o->name || strcmp(o->name, V2_OUTPUT_NAME) != 0)
                        return bad(err, err_len, -ENOENT, "unexpected inference output '%.64s' for model '%s' (it "
                                   "has '%s')", o->name ? o->name : "", m->name, V2_OUTPUT_NAME);
                const Inference__InferParameter *cls = param_get(o->parameters, o->n_parameters, "classification");
                if (cls) {
                        int64_t k = -1;
                        if (cls->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM)
                                k = cls->int64_param;
                        else if (cls->parameter_choice_case == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM)
                                k = cls->uint64_param > INT32_MAX ? -1 : (int64_t)cls->uint64_param;
                        if (k < 0 || k > m->classes)
                                return bad(err, err_len, -EBADMSG, "output '%s': parameter 'classification' must "
                                           "be an integer in 0..%d", V2_OUTPUT_NAME, m->classes);
                        r->classification = (int)k;
                }
        }
        return 0;
}

static void shape_str(const int64_t *dims, size_t rank, char *buf, size_t n)
{
        size_t o = 0;
        o += (size_t)snprintf(buf, n, "[");
        for (size_t i = 0; i < rank && o < n; i++)
                o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)dims[i]);
        if (o < n)
                snprintf(buf + o, n - o, "]");
}

/* The input's name, datatype and shape: r->datatype and r->n. */
static int parse_input_head(const Inference__ModelInferRequest__InferInputTensor *in, const struct v2_model *m,
                            const struct v2_limits *lim, struct v2_request *r, char *err, size_t err_len)
{
        char shape[96];

        if (!in->name || strcmp(in->name, V2_INPUT_NAME) != 0)
                return bad(err, err_len, -EBADMSG, "unexpected inference input '%.64s' for model '%s' (it has '%s')",
                           in->name ? in->name : "", m->name, V2_INPUT_NAME);
        shape_str(in->shape, in->n_shape < 8 ? in->n_shape : 8, shape, sizeof shape);
        for (size_t i = 0; i < in->n_shape; i++)
                if (in->shape[i] < 0 || in->shape[i] > INT32_MAX)
                        return bad(err, err_len, -EBADMSG, "input '%s': shape %s must hold integers in 0..%d",
                                   V2_INPUT_NAME, shape, INT32_MAX);
        if (in->datatype && strcmp(in->datatype, "FP32") == 0) {
                r->datatype = V2_FP32;
                if (in->n_shape != 4 || in->shape[1] != 3 || in->shape[2] != m->size || in->shape[3] != m->size)
                        return bad(err, err_len, -EBADMSG, "input '%s': shape %s of FP32 does not match the model's "
                                   "[-1,3,%d,%d] (NCHW)", V2_INPUT_NAME, shape, m->size, m->size);
        } else if (in->datatype && strcmp(in->datatype, "BYTES") == 0) {
                r->datatype = V2_BYTES;
                if (in->n_shape != 1)
                        return bad(err, err_len, -EBADMSG, "input '%s': shape %s of BYTES must be [N], one encoded "
                                   "image per element", V2_INPUT_NAME, shape);
        } else {
                return bad(err, err_len, -EBADMSG, "input '%s': datatype %.32s; the model takes FP32 [-1,3,%d,%d] "
                           "or BYTES [N] (encoded images)", V2_INPUT_NAME, in->datatype ? in->datatype : "",
                           m->size, m->size);
        }
        if (in->shape[0] < 1)
                return bad(err, err_len, -EBADMSG, "input '%s': shape %s has no images", V2_INPUT_NAME, shape);
        if (in->shape[0] > lim->max_images)
                return bad(err, err_len, -E2BIG, "input '%s': %lld images in one request; the limit is %d",
                           V2_INPUT_NAME, (long long)in->shape[0], lim->max_images);
        r->n = (int)in->shape[0];
        return 0;
}

/* The least and the greatest value of each image (v2_check_logits). */
static void fp32_ranges(struct v2_request *r, size_t image_floats)
{
        for (int i = 0; i < r->n; i++) {
                const float *x = r->tensor + (size_t)i * image_floats;
                float lo = INFINITY, hi = -INFINITY;
                for (size_t j = 0; j < image_floats; j++) {
                        if (x[j] < lo)
                                lo = x[j];
                        if (x[j] > hi)
                                hi = x[j];
                }
                r->range[2 * i] = lo;
                r->range[2 * i + 1] = hi;
        }
}

static int parse_fp32(const Inference__ModelInferRequest *q, const Inference__InferTensorContents *ct,
                      const struct v2_model *m, struct v2_request *r, struct budget *b, struct budget_client *c,
                      char *err, size_t err_len)
{
        size_t image_floats = (size_t)3 * (size_t)m->size * (size_t)m->size;
        size_t floats = image_floats * (size_t)r->n;
        int e = 0;

        if (q->n_raw_input_contents) {
                if (q->raw_input_contents[0].len != floats * sizeof(float))
                        return bad(err, err_len, -EBADMSG, "input '%s': %zu bytes of raw_input_contents; its shape "
                                   "[%d,3,%d,%d] of FP32 needs %zu", V2_INPUT_NAME, q->raw_input_contents[0].len,
                                   r->n, m->size, m->size, floats * sizeof(float));
        } else if (!ct || ct->n_fp32_contents != floats) {
                return bad(err, err_len, -EBADMSG, "input '%s': %zu values in fp32_contents; its shape [%d,3,%d,%d] "
                           "needs %zu", V2_INPUT_NAME, ct ? ct->n_fp32_contents : 0, r->n, m->size, m->size, floats);
        }
        if (!(r->tensor = charged_calloc(b, c, floats * sizeof(float), &e)) ||
            !(r->range = charged_calloc(b, c, sizeof(float) * 2 * (size_t)r->n, &e)))
                return e;
        if (q->n_raw_input_contents) {
                /* Little-endian on the wire, as on every target this builds for. */
                memcpy(r->tensor, q->raw_input_contents[0].data, floats * sizeof(float));
        } else {
                memcpy(r->tensor, ct->fp32_contents, floats * sizeof(float));
        }
        fp32_ranges(r, image_floats);
        return 0;
}

static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* BYTES: n encoded images, from bytes_contents or raw (4-byte
 * little-endian length, then the bytes, per element), copied into one
 * block of the request's own (r->decoded) so that the message can go. */
static int parse_bytes(const Inference__ModelInferRequest *q, const Inference__InferTensorContents *ct,
                       const struct v2_limits *lim, struct v2_request *r, struct budget *b, struct budget_client *c,
                       char *err, size_t err_len)
{
        size_t n = (size_t)r->n, total = 0;
        int e = 0;

        if (!(r->images = charged_calloc(b, c, n * sizeof *r->images, &e)))
                return e;
        if (q->n_raw_input_contents) {
                /* Offsets, not pointers: an empty field's data is NULL. */
                const uint8_t *data = q->raw_input_contents[0].data;
                size_t len = q->raw_input_contents[0].len, off = 0;
                for (size_t i = 0; i < n; i++) {
                        if (len - off < 4)
                                return bad(err, err_len, -EBADMSG, "input '%s': raw_input_contents end before "
                                           "element %zu of %zu", V2_INPUT_NAME, i + 1, n);
                        uint32_t l = le32(data + off);
                        off += 4;
                        if (len - off < l)
                                return bad(err, err_len, -EBADMSG, "input '%s': element %zu is %u bytes; %zu are "
                                           "left", V2_INPUT_NAME, i + 1, l, len - off);
                        r->images[i] = (struct v2_image){ .data = data + off, .len = l };
                        off += l;
                }
                if (off != len)
                        return bad(err, err_len, -EBADMSG, "input '%s': %zu bytes after its %zu elements",
                                   V2_INPUT_NAME, len - off, n);
        } else {
                if (!ct || ct->n_bytes_contents != n)
                        return bad(err, err_len, -EBADMSG, "input '%s': %zu elements in bytes_contents; its shape "
                                   "says %zu", V2_INPUT_NAME, ct ? ct->n_bytes_contents : 0, n);
                for (size_t i = 0; i < n; i++)
                        r->images[i] = (struct v2_image){ .data = ct->bytes_contents[i].data,
                                                          .len = ct->bytes_contents[i].len };
        }
        for (size_t i = 0; i < n; i++) {
                if (r->images[i].len > lim->max_image_bytes)
                        return bad(err, err_len, -E2BIG, "image %zu: %zu bytes, more than the limit of %zu", i + 1,
                                   r->images[i].len, lim->max_image_bytes);
                total += r->images[i].len;
        }
        if (!(r->decoded = charged_calloc(b, c, total, &e)))
                return e;
        for (size_t i = 0, off = 0; i < n; i++) {
                if (r->images[i].len)
                        memcpy(r->decoded + off, r->images[i].data, r->images[i].len);
                r->images[i].data = r->decoded + off;
                off += r->images[i].len;
        }
        return 0;
}

/* The charges of what parse_fp32 and parse_bytes allocated. */
static size_t request_bytes(const struct v2_request *r, const struct v2_model *m)
{
        size_t bytes = 0;
        if (r->tensor)
                bytes += sizeof(float) * 3 * (size_t)m->size * (size_t)m->size * (size_t)r->n;
        if (r->range)
                bytes += sizeof(float) * 2 * (size_t)r->n;
        if (r->images)
                bytes += sizeof *r->images * (size_t)r->n;
        if (r->decoded)
                for (int i = 0; i < r->n; i++)
                        bytes += r->images[i].len;
        return bytes;
}

static char *dup_charged(const char *s, struct budget *b, struct budget_client *c, int *ret_err)
{
        size_t l = strlen(s ? s : "");
        char *d = charged_calloc(b, c, l + 1, ret_err);
        if (d && l)
                memcpy(d, s, l);
        return d;
}

void kserve_request_free(struct v2_request *r, const struct v2_model *m, struct budget *b, struct budget_client *c)
{
        if (!r)
                return;
        size_t bytes = request_bytes(r, m) + (r->id ? strlen(r->id) + 1 : 0);
        v2_request_free(r);
        budget_release(b, c, (int64_t)bytes);
}

int kserve_parse_infer(const uint8_t *msg, size_t len, kserve_resolve_fn resolve, void *resolve_userdata,
                       const struct v2_limits *lim, struct budget *b, struct budget_client *c, char *err,
                       size_t err_len, struct v2_request **ret_request, const struct v2_model **ret_model)
{
        const struct v2_model *m = NULL;
        struct charged_alloc ca = { .b = b, .c = c };
        ProtobufCAllocator alloc = { .alloc = ca_alloc, .free = ca_free, .allocator_data = &ca };
        Inference__ModelInferRequest *q;
        struct v2_request *r = NULL;
        int ret, e = 0;

        q = inference__model_infer_request__unpack(&alloc, len, msg);
        if (!q) {
                if (ca.refused)
                        return bad(err, err_len, ca.refused, "the request's %zu bytes do not fit the memory budget "
                                   "now", len);
                return bad(err, err_len, -EBADMSG, "not a ModelInferRequest message");
        }
        if ((ret = resolve(resolve_userdata, q->model_name ? q->model_name : "",
                           q->model_version ? q->model_version : "", &m, err, err_len)) < 0)
                goto fail;
        ret = -ENOMEM;
        if (!(r = calloc(1, sizeof *r)))
                goto fail;
        r->binary_output = true;   /* gRPC's outputs are raw_output_contents */
        if (q->id && q->id[0]) {
                if (strlen(q->id) > V2_MAX_ID) {
                        ret = bad(err, err_len, -EBADMSG, "'id' is longer than %d bytes", V2_MAX_ID);
                        goto fail;
                }
                if (!(r->id = dup_charged(q->id, b, c, &e)))
                        goto fail_e;
        }
        if (q->n_inputs != 1) {
                ret = bad(err, err_len, -EBADMSG, "model '%s' has one input ('%s'); the request has %zu", m->name,
                          V2_INPUT_NAME, q->n_inputs);
                goto fail;
        }
        if (q->n_raw_input_contents > 1) {
                ret = bad(err, err_len, -EBADMSG, "%zu raw_input_contents for one input", q->n_raw_input_contents);
                goto fail;
        }
        const Inference__ModelInferRequest__InferInputTensor *in = q->inputs[0];
        if (q->n_raw_input_contents && in->contents) {
                ret = bad(err, err_len, -EBADMSG, "input '%s' has both contents and raw_input_contents", V2_INPUT_NAME);
                goto fail;
        }
        if ((ret = parse_outputs(q, m, r, err, err_len)) < 0 || (ret = parse_input_head(in, m, lim, r, err, err_len)) < 0)
                goto fail;
        ret = r->datatype == V2_FP32 ? parse_fp32(q, in->contents, m, r, b, c, err, err_len)
                                     : parse_bytes(q, in->contents, lim, r, b, c, err, err_len);
        if (ret < 0) {
                if (ret == -ENOBUFS || ret == -EDQUOT)
                        bad(err, err_len, ret, "the request's tensors do not fit the memory budget now");
                goto fail;
        }
        inference__model_infer_request__free_unpacked(q, &alloc);
        *ret_request = r;
        *ret_model = m;
        return 0;
fail_e:
        ret = e;
        if (e == -ENOBUFS || e == -EDQUOT)
                bad(err, err_len, e, "the request does not fit the memory budget now");
fail:
        if (r)
                kserve_request_free(r, m, b, c);
        inference__model_infer_request__free_unpacked(q, &alloc);
        return ret;
}

/* ---- answers ----------------------------------------------------------------------------- */

/* The response for r, its outputs' raw contents in raw (the binary part of
 * v2_infer_body's answer: the same bytes as REST's binary output). */
static int infer_response_fill(const struct v2_model *m, const struct v2_request *r, float *logits,
                               Inference__ModelInferResponse *resp, Inference__ModelInferResponse__InferOutputTensor *out,
                               Inference__ModelInferResponse__InferOutputTensor **outs, int64_t shape[2],
                               ProtobufCBinaryData *raw, char version[24], char **ret_body)
{
        char *body = NULL;
        size_t len = 0, hlen = 0;
        int ret = v2_infer_body(m, r, logits, &body, &len, &hlen);

        if (ret < 0)
                return ret;
        shape[0] = r->n;
        shape[1] = r->classification ? r->classification : m->classes;
        out->name = (char *)V2_OUTPUT_NAME;
        out->datatype = (char *)(r->classification ? "BYTES" : "FP32");
        out->n_shape = 2;
        out->shape = shape;
        outs[0] = out;
        snprintf(version, 24, "%lld", (long long)(m->version > 0 ? m->version : 1));
        resp->model_name = (char *)m->name;
        resp->model_version = version;
        resp->id = r->id ? r->id : (char *)"";
        resp->n_outputs = 1;
        resp->outputs = outs;
        raw->data = (uint8_t *)body + hlen;
        raw->len = len - hlen;
        resp->n_raw_output_contents = 1;
        resp->raw_output_contents = raw;
        *ret_body = body;
        return 0;
}

int kserve_infer_response(const struct v2_model *m, const struct v2_request *r, float *logits, uint8_t **ret_msg,
                          size_t *ret_len)
{
        Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
        Inference__ModelInferResponse__InferOutputTensor out = INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
        Inference__ModelInferResponse__InferOutputTensor *outs[1];
        int64_t shape[2];
        ProtobufCBinaryData raw;
        char *body = NULL, version[24];
        int ret = infer_response_fill(m, r, logits, &resp, &out, outs, shape, &raw, version, &body);

        if (ret < 0)
                return ret;
        size_t n = inference__model_infer_response__get_packed_size(&resp);
        uint8_t *msg = malloc(n ? n : 1);
        if (!msg) {
                free(body);
                return -ENOMEM;
        }
        inference__model_infer_response__pack(&resp, msg);
        free(body);
        *ret_msg = msg;
        *ret_len = n;
        return 0;
}

/* A message's serialization into a fresh buffer: -ENOMEM. */
static int pack(const ProtobufCMessage *msg, uint8_t **ret, size_t *ret_len)
{
        size_t n = protobuf_c_message_get_packed_size(msg);
        uint8_t *p = malloc(n ? n : 1);
        if (!p)
                return -ENOMEM;
        protobuf_c_message_pack(msg, p);
        *ret = p;
        *ret_len = n;
        return 0;
}

/* ---- calls ---------------------------------------------------------------------------------- */

/* The HTTP status an answer of this gRPC status stands for in the access
 * log, so that one log reads the same for both protocols. */
static int http_status_of(int code)
{
        switch (code) {
        case H2_OK: return 200;
        case H2_INVALID_ARGUMENT: return 400;
        case H2_NOT_FOUND: return 404;
        case H2_UNIMPLEMENTED: return 404;
        case H2_RESOURCE_EXHAUSTED: return 413;
        case H2_UNAVAILABLE: return 503;
        case H2_DEADLINE_EXCEEDED: return 504;
        case H2_CANCELLED: return 499;
        case H2_UNAUTHENTICATED: return 401;
        default: return 500;
        }
}

/* Counts one answer and logs it; pr: the request's work in the pipeline
 * (its model and stage times for the record), or NULL. */
static void count(struct ks_call *kc, int code, int64_t start_ns, size_t in_bytes, size_t out_bytes, int images,
                  int64_t queue_ns, int64_t forward_ns, int batch_size, const struct pipe_req *pr)
{
        struct kserve *k = kc->k;
        int64_t ns = time_now_ns() - start_ns;

        atomic_fetch_add(&k->requests[kc->method][code >= 0 && code < GRPC_N_CODES ? code : H2_UNKNOWN], 1);
        atomic_fetch_add(&k->micros[kc->method], (unsigned long long)(ns / 1000));
        if (!k->opts.backend.access_log)
                return;
        char path[96];
        snprintf(path, sizeof path, SERVICE "%s", grpc_method_name(kc->method));
        struct http_access a = { .request_id = kc->request_id, .client = h2_call_peer(kc->call), .method = "GRPC",
                                 .path = path, .status = http_status_of(code),
                                 .error = code ? grpc_code_name(code) : NULL, .images = images,
                                 .body_bytes = in_bytes, .answer_bytes = out_bytes, .queue_ms = -1,
                                 .ms = (double)ns / 1e6, .trace_id = kc->trace.trace_id_hex,
                                 .span_id = kc->trace.span_id_hex, .parent_id = kc->trace.parent_id_hex,
                                 .sampled = trace_sampled(&kc->trace), .protocol = "grpc", .start_ns = start_ns,
                                 .end_ns = time_now_ns() };
        if (pr) {
                pipe_req_stages(pr, &a.stages);
                if (pipe_req_model(pr)) {
                        a.model = pipe_req_model(pr)->name;
                        a.version = (long long)pipe_req_model(pr)->version;
                }
        }
        if (queue_ns >= 0 && forward_ns) {
                a.queue_ms = (double)queue_ns / 1e6;
                a.inference_ms = (double)forward_ns / 1e6;
                a.batch_size = batch_size;
        }
        k->opts.backend.access_log(k->opts.backend.userdata, &a);
}

static void kc_free(struct ks_call *kc)
{
        pthread_mutex_destroy(&kc->lock);
        free(kc);
}

/* Finishes the call (lock held by the caller, who frees kc after
 * unlocking when this returns true: nothing is pending any more). */
static bool kc_finish_locked(struct ks_call *kc, enum h2_status st, const char *msg)
{
        if (!kc->finished) {
                kc->finished = true;
                h2_call_finish(kc->call, st, msg);
        }
        return kc->pending == 0;
}

/* A unary call's one answer: the message (or an error status), counted. */
static void answer_unary(struct ks_call *kc, const ProtobufCMessage *resp, enum h2_status st, const char *msg,
                         size_t in_bytes)
{
        uint8_t *buf = NULL;
        size_t len = 0;
        int64_t start = h2_call_start_ns(kc->call);

        if (st == H2_OK && resp) {
                if (pack(resp, &buf, &len) < 0) {
                        st = H2_RESOURCE_EXHAUSTED;
                        msg = "out of memory; retry later";
                } else if (h2_call_send(kc->call, buf, len) < 0) {
                        st = H2_RESOURCE_EXHAUSTED;
                        msg = "the answer does not fit the memory budget now; retry later";
                }
        }
        free(buf);
        count(kc, st, start, in_bytes, st == H2_OK ? len : 0, 0, -1, 0, 0, NULL);
        pthread_mutex_lock(&kc->lock);
        bool done = kc_finish_locked(kc, st, msg);
        pthread_mutex_unlock(&kc->lock);
        if (done)
                kc_free(kc);
}

/* A version as the protocol writes it ("" for the highest): 0 or the
 * number; -EINVAL for anything else (no such version). */
static int parse_version(const char *v, int64_t *ret)
{
        int64_t n = 0;
        size_t len = strlen(v ? v : "");

        if (len == 0) {
                *ret = 0;
                return 0;
        }
        if (len > 18 || v[0] == '0')
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return -EINVAL;
                n = n * 10 + (v[i] - '0');
        }
        *ret = n;
        return 0;
}

/* The message for a model name and version that reg_acquire refused (r). */
static void not_found_msg(int r, const char *name, const char *version, char *msg, size_t n)
{
        if (r == -ENODEV || r == -EINVAL)
                snprintf(msg, n, "model '%.64s' has no version '%.32s'", name, version);
        else if (r == -EADDRNOTAVAIL)
                snprintf(msg, n, "name a model: this server serves several");
        else
                snprintf(msg, n, "unknown model '%.64s'", name);
}

/* The model version a request names ("" name: the default model), as a
 * reference given back with reg_release; NULL with the message in msg. */
static struct reg_version *model_lookup(struct kserve *k, const char *name, const char *version, char *msg,
                                        size_t n)
{
        struct reg_version *mv = NULL;
        int64_t v = 0;
        int r = parse_version(version, &v);

        name = name ? name : "";
        version = version ? version : "";
        if (r == 0)
                r = reg_acquire(k->reg, name[0] ? name : NULL, strlen(name), v, &mv);
        if (r == 0)
                return mv;
        not_found_msg(r, name, version, msg, n);
        return NULL;
}

/* ModelConfig from the very JSON that REST's /v2/models/{m}/config answers
 * (g->v2_config_body), so that both protocols say the same. */
static int config_response(const struct generation *g, uint8_t **ret_msg, size_t *ret_len)
{
        json_error_t je;
        json_t *root = json_loads(g->v2_config_body, 0, &je);
        Inference__ModelConfig cfg = INFERENCE__MODEL_CONFIG__INIT;
        Inference__ModelConfigResponse resp = INFERENCE__MODEL_CONFIG_RESPONSE__INIT;
        Inference__ModelVersionPolicy vp = INFERENCE__MODEL_VERSION_POLICY__INIT;
        Inference__ModelVersionPolicy__Latest latest = INFERENCE__MODEL_VERSION_POLICY__LATEST__INIT;
        Inference__ModelInput in = INFERENCE__MODEL_INPUT__INIT, *ins[1] = { &in };
        Inference__ModelOutput out = INFERENCE__MODEL_OUTPUT__INIT, *outs[1] = { &out };
        Inference__ModelDynamicBatching db = INFERENCE__MODEL_DYNAMIC_BATCHING__INIT;
        Inference__ModelConfig__ParametersEntry *entries = NULL, **eptrs = NULL;
        Inference__ModelParameter *values = NULL;
        int64_t in_dims[3] = { 3, g->v2.size, g->v2.size }, out_dims[1] = { g->v2.classes };
        int32_t sizes[BATCH_MAX_EXEC];
        int ret = -ENOMEM;

        if (!root)
                return -ENOMEM;
        json_t *params = json_object_get(root, "parameters");
        size_t np = json_object_size(params);
        entries = calloc(np + 1, sizeof *entries);
        eptrs = calloc(np + 1, sizeof *eptrs);
        values = calloc(np + 1, sizeof *values);
        if (!entries || !eptrs || !values)
                goto out;
        const char *key;
        json_t *v;
        size_t i = 0;
        json_object_foreach(params, key, v) {
                values[i] = (Inference__ModelParameter)INFERENCE__MODEL_PARAMETER__INIT;
                values[i].string_value = (char *)json_string_value(json_object_get(v, "string_value"));
                if (!values[i].string_value)
                        values[i].string_value = (char *)"";
                entries[i] = (Inference__ModelConfig__ParametersEntry)INFERENCE__MODEL_CONFIG__PARAMETERS_ENTRY__INIT;
                entries[i].key = (char *)key;
                entries[i].value = &values[i];
                eptrs[i] = &entries[i];
                i++;
        }
        latest.num_versions = 1;
        vp.policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST;
        vp.latest = &latest;
        in.name = (char *)V2_INPUT_NAME;
        in.data_type = INFERENCE__DATA_TYPE__TYPE_FP32;
        in.format = INFERENCE__MODEL_INPUT__FORMAT__FORMAT_NCHW;
        in.n_dims = 3;
        in.dims = in_dims;
        out.name = (char *)V2_OUTPUT_NAME;
        out.data_type = INFERENCE__DATA_TYPE__TYPE_FP32;
        out.n_dims = 1;
        out.dims = out_dims;
        for (int j = 0; j < g->v2.n_exec && j < BATCH_MAX_EXEC; j++)
                sizes[j] = g->v2.exec_batch[j];
        db.n_preferred_batch_size = (size_t)g->v2.n_exec;
        db.preferred_batch_size = sizes;
        db.max_queue_delay_microseconds = (uint64_t)g->v2.max_delay_us;
        cfg.name = (char *)g->v2.name;
        cfg.platform = (char *)V2_PLATFORM;
        cfg.backend = (char *)"onednn";
        cfg.version_policy = &vp;
        cfg.max_batch_size = g->v2.max_batch;
        cfg.n_input = 1;
        cfg.input = ins;
        cfg.n_output = 1;
        cfg.output = outs;
        cfg.dynamic_batching = &db;
        cfg.n_parameters = i;
        cfg.parameters = eptrs;
        resp.config = &cfg;
        ret = pack(&resp.base, ret_msg, ret_len);
out:
        free(entries);
        free(eptrs);
        free(values);
        json_decref(root);
        return ret;
}

/* The RPCs that read the model's description or the server's state. */
static void serve_info(struct ks_call *kc, const uint8_t *msg, size_t len)
{
        struct kserve *k = kc->k;
        const struct kserve_backend *be = &k->opts.backend;
        struct reg_version *mv = NULL;
        const struct generation *g;
        char err[256];
        ProtobufCMessage *req = NULL;
        const ProtobufCMessageDescriptor *d = NULL;

        switch (kc->method) {
        case GRPC_SERVER_LIVE: d = &inference__server_live_request__descriptor; break;
        case GRPC_SERVER_READY: d = &inference__server_ready_request__descriptor; break;
        case GRPC_MODEL_READY: d = &inference__model_ready_request__descriptor; break;
        case GRPC_SERVER_METADATA: d = &inference__server_metadata_request__descriptor; break;
        case GRPC_MODEL_METADATA: d = &inference__model_metadata_request__descriptor; break;
        case GRPC_MODEL_CONFIG: d = &inference__model_config_request__descriptor; break;
        default: break;
        }
        /* These requests are a few bytes: a bounded message needs no charge
         * beyond the transport's. */
        if (!d || !(req = protobuf_c_message_unpack(d, NULL, len, msg))) {
                answer_unary(kc, NULL, H2_INVALID_ARGUMENT, "malformed request message", len);
                return;
        }
        /* The model RPCs name a model and a version, in fields 1 and 2 of each. */
        if (kc->method == GRPC_MODEL_READY || kc->method == GRPC_MODEL_METADATA || kc->method == GRPC_MODEL_CONFIG) {
                const Inference__ModelReadyRequest *q = (const void *)req;   /* the same layout in all three */
                if (!(mv = model_lookup(k, q->name, q->version, err, sizeof err))) {
                        answer_unary(kc, NULL, H2_NOT_FOUND, err, len);
                        protobuf_c_message_free_unpacked(req, NULL);
                        return;
                }
        }
        g = mv ? mv->g : NULL;
        switch (kc->method) {
        case GRPC_SERVER_LIVE: {
                Inference__ServerLiveResponse r = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
                r.live = true;
                answer_unary(kc, &r.base, H2_OK, NULL, len);
                break;
        }
        case GRPC_SERVER_READY: {
                Inference__ServerReadyResponse r = INFERENCE__SERVER_READY_RESPONSE__INIT;
                r.ready = be->ready(be->userdata);
                answer_unary(kc, &r.base, H2_OK, NULL, len);
                break;
        }
        case GRPC_MODEL_READY: {
                Inference__ModelReadyResponse r = INFERENCE__MODEL_READY_RESPONSE__INIT;
                r.ready = be->ready(be->userdata);
                answer_unary(kc, &r.base, H2_OK, NULL, len);
                break;
        }
        case GRPC_SERVER_METADATA: {
                static char *ext[] = { "binary_tensor_data", "classification", "model_configuration" };
                Inference__ServerMetadataResponse r = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
                r.name = (char *)"effnetd";
                r.version = (char *)EFFNET_VERSION;
                r.n_extensions = 3;
                r.extensions = ext;
                answer_unary(kc, &r.base, H2_OK, NULL, len);
                break;
        }
        case GRPC_MODEL_METADATA: {
                /* Every version serving now, as the v2 protocol's metadata says. */
                int64_t numbers[REG_MAX_LISTED_VERSIONS];
                char text[REG_MAX_LISTED_VERSIONS][24], *versions[REG_MAX_LISTED_VERSIONS];
                int n = reg_versions(k->reg, g->v2.name, numbers, REG_MAX_LISTED_VERSIONS);
                if (n == 0)
                        numbers[n++] = g->v2.version > 0 ? g->v2.version : 1;
                for (int i = 0; i < n; i++) {
                        snprintf(text[i], sizeof text[i], "%lld", (long long)numbers[i]);
                        versions[i] = text[i];
                }
                int64_t in_shape[4] = { -1, 3, g->v2.size, g->v2.size }, out_shape[2] = { -1, g->v2.classes };
                Inference__ModelMetadataResponse__TensorMetadata in = INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT,
                                                                 out = INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT;
                Inference__ModelMetadataResponse__TensorMetadata *ins[1] = { &in }, *outs[1] = { &out };
                Inference__ModelMetadataResponse r = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
                in.name = (char *)V2_INPUT_NAME;
                in.datatype = (char *)"FP32";
                in.n_shape = 4;
                in.shape = in_shape;
                out.name = (char *)V2_OUTPUT_NAME;
                out.datatype = (char *)"FP32";
                out.n_shape = 2;
                out.shape = out_shape;
                r.name = (char *)g->v2.name;
                r.n_versions = (size_t)n;
                r.versions = versions;
                r.platform = (char *)V2_PLATFORM;
                r.n_inputs = 1;
                r.inputs = ins;
                r.n_outputs = 1;
                r.outputs = outs;
                answer_unary(kc, &r.base, H2_OK, NULL, len);
                break;
        }
        case GRPC_MODEL_CONFIG: {
                uint8_t *buf = NULL;
                size_t blen = 0;
                if (config_response(g, &buf, &blen) < 0 || h2_call_send(kc->call, buf, blen) < 0) {
                        free(buf);
                        answer_unary(kc, NULL, H2_RESOURCE_EXHAUSTED, "out of memory; retry later", len);
                        break;
                }
                free(buf);
                /* Sent above: finish with no second message. */
                count(kc, H2_OK, h2_call_start_ns(kc->call), len, blen, 0, -1, 0, 0, NULL);
                pthread_mutex_lock(&kc->lock);
                bool done = kc_finish_locked(kc, H2_OK, NULL);
                pthread_mutex_unlock(&kc->lock);
                if (done)
                        kc_free(kc);
                break;
        }
        default:
                break;
        }
        protobuf_c_message_free_unpacked(req, NULL);
        reg_release(k->reg, mv);
}

/* ---- ModelInfer and ModelStreamInfer -------------------------------------------------------- */

/* The status for a failure of the parse, the admission or the pipeline. */
static enum h2_status status_of(int r)
{
        switch (r) {
        case -EBADMSG:
        case -ENOTSUP:
        case -ERANGE: return H2_INVALID_ARGUMENT;
        case -ENOENT: return H2_NOT_FOUND;
        case -E2BIG:
        case -ENOBUFS:
        case -EDQUOT:
        case -ENOMEM: return H2_RESOURCE_EXHAUSTED;
        case -EAGAIN:
        case -ESHUTDOWN: return H2_UNAVAILABLE;
        case -ETIMEDOUT: return H2_DEADLINE_EXCEEDED;
        default: return H2_INTERNAL;
        }
}

/* Appends a protobuf length-delimited field (tag, varint length, bytes). */
static size_t put_field(uint8_t *p, uint8_t tag, const void *data, size_t len)
{
        size_t o = 0;
        p[o++] = tag;
        size_t v = len;
        do {
                uint8_t b = v & 0x7f;
                v >>= 7;
                p[o++] = (uint8_t)(b | (v ? 0x80 : 0));
        } while (v);
        if (len)
                memcpy(p + o, data, len);
        return o + len;
}

/* One request's answer on its call: a unary call's message, or a stream's
 * ModelStreamInferResponse (its infer_response, or its error_message:
 * a stream goes on after a failed request, as Triton's does). */
static enum h2_status send_answer(struct ks_call *kc, enum h2_status st, const char *msg, const uint8_t *resp,
                                  size_t resp_len, size_t *ret_sent)
{
        *ret_sent = 0;
        if (!kc->stream) {
                if (st != H2_OK)
                        return st;
                int r = h2_call_send(kc->call, resp, resp_len);
                if (r < 0)   /* the client left (its answer is counted as cancelled), or the budget is full */
                        return r == -ECANCELED ? H2_CANCELLED : H2_RESOURCE_EXHAUSTED;
                *ret_sent = resp_len;
                return H2_OK;
        }
        size_t mlen = st == H2_OK ? resp_len : strlen(msg ? msg : "");
        uint8_t *buf = malloc(mlen + 16);
        if (!buf)
                return H2_RESOURCE_EXHAUSTED;
        size_t n = st == H2_OK ? put_field(buf, 0x12, resp, resp_len) : put_field(buf, 0x0a, msg, mlen);
        if (h2_call_send(kc->call, buf, n) == 0)
                *ret_sent = n;
        free(buf);
        return st;
}

/* A request is answered: the call ends with it (unary), or when the client
 * has sent all and nothing is pending (stream). Frees kc when it is over. */
static void request_over(struct ks_call *kc, enum h2_status st, const char *msg)
{
        bool done = false;

        atomic_fetch_sub(&kc->k->pending, 1);
        pthread_mutex_lock(&kc->lock);
        kc->pending--;
        if (!kc->stream)
                done = kc_finish_locked(kc, st, msg);
        else if ((kc->ended || kc->cancelled) && kc->pending == 0)
                done = kc_finish_locked(kc, kc->cancelled ? H2_CANCELLED : H2_OK, NULL);
        pthread_mutex_unlock(&kc->lock);
        if (done)
                kc_free(kc);
}

/* The status of a request the pipeline failed. */
static enum h2_status status_of_api(enum api_error e)
{
        switch (e) {
        case API_E_INVALID_ARGUMENT:
        case API_E_INVALID_IMAGE:
        case API_E_INVALID_MULTIPART:
        case API_E_INVALID_REQUEST: return H2_INVALID_ARGUMENT;
        case API_E_NOT_FOUND: return H2_NOT_FOUND;
        case API_E_TOO_LARGE: return H2_RESOURCE_EXHAUSTED;
        case API_E_OVERLOADED:
        case API_E_DRAINING: return H2_UNAVAILABLE;
        case API_E_DEADLINE: return H2_DEADLINE_EXCEEDED;
        case API_E_CLIENT_GONE: return H2_CANCELLED;
        default: return H2_INTERNAL;
        }
}

static void req_free(struct ks_req *q)
{
        struct kserve *k = q->kc->k;

        if (q->req)
                kserve_request_free(q->req, q->m, k->budget, q->pr->client);
        pipe_req_uncharge(q->pr, (int64_t)sizeof *q);
        pipe_req_free(q->pr);
        free(q);
}

/* Answers a request that failed (st, msg), or that the pipeline completed
 * (st H2_OK: its outputs are pr's). */
static void answer_infer(struct ks_req *q, enum h2_status st, const char *msg)
{
        struct ks_call *kc = q->kc;
        struct kserve *k = kc->k;
        struct pipe_req *pr = q->pr;
        uint8_t *resp = NULL;
        size_t resp_len = 0, sent = 0;
        char err[256];
        int images = q->req ? q->req->n : 0;

        if (st == H2_OK && pr->failed) {
                st = status_of_api(pr->err);
                msg = pr->msg;
        } else if (st == H2_OK) {
                int r = v2_check_logits(q->m, q->req, pr->logits, err, sizeof err);
                if (r == 0)
                        r = kserve_infer_response(q->m, q->req, pr->logits, &resp, &resp_len);
                if (r == -ERANGE) {
                        st = H2_INVALID_ARGUMENT;
                        msg = err;
                } else if (r == -EDOM) {
                        st = H2_INTERNAL;
                        msg = "the model computed NaN or Inf for this input: its weights are broken";
                } else if (r < 0) {
                        st = H2_RESOURCE_EXHAUSTED;
                        msg = "out of memory; retry later";
                }
        }
        st = send_answer(kc, st, msg, resp, resp_len, &sent);
        free(resp);
        if (st == H2_OK)
                atomic_fetch_add(&k->images, (unsigned long long)images);
        int64_t queue_ns = pr->job.taken_ns && pr->submit_ns ? pr->job.taken_ns - pr->submit_ns : -1;
        count(kc, st, q->start_ns, q->in_bytes, sent, images, queue_ns, pr->job.forward_ns, pr->job.batch_size, pr);
        /* The message may be pr's, which goes with q. */
        char final[256];
        snprintf(final, sizeof final, "%s", msg ? msg : "");
        req_free(q);
        request_over(kc, st, final);
}

/* The pipeline's one completion, on one of its threads. */
static void on_pipe_done(struct pipe_req *pr, void *userdata)
{
        answer_infer(userdata, H2_OK, NULL);
}

/* The model a request names, acquired by its pipe_req (kserve_resolve_fn). */
static int resolve_model(void *userdata, const char *name, const char *version, const struct v2_model **ret_model,
                         char *err, size_t err_len)
{
        struct ks_req *q = userdata;
        int64_t v = 0;
        int r = parse_version(version, &v);

        if (r == 0)
                r = pipe_req_acquire(q->pr, name[0] ? name : NULL, strlen(name), v);
        if (r < 0) {
                not_found_msg(r, name, version, err, err_len);
                return -ENOENT;
        }
        *ret_model = &pipe_req_model(q->pr)->v2;
        return 0;
}

/* The most bytes of the answer per image: v2_infer_body's binary part
 * (FP32 probabilities, or k strings) and the protobuf message made of it,
 * held at once. */
static size_t answer_per_image(const struct v2_model *m, const struct v2_request *r)
{
        size_t per = r->classification ? (size_t)r->classification * ANSWER_STRING_MAX
                                       : (size_t)m->classes * sizeof(float);
        return 2 * per;
}

/* One ModelInfer (or stream) message: parsed here, on the loop thread
 * (protobuf-c copies its tensor, about a memcpy), its model version taken
 * on the way, then handed to the pipeline. */
static void start_infer(struct ks_call *kc, const uint8_t *msg, size_t len)
{
        struct kserve *k = kc->k;
        const struct pipe_opts *po = pipe_get_opts(k->pipe);
        struct v2_limits lim = { .max_images = po->max_images, .max_image_bytes = po->img.limits.max_bytes };
        struct pipe_req *pr = NULL;
        struct ks_req *q = NULL;
        size_t key_len = 0;
        const void *key = h2_call_client_key(kc->call, &key_len);
        char err[256];
        int r;

        atomic_fetch_add(&k->pending, 1);
        pthread_mutex_lock(&kc->lock);
        kc->pending++;
        pthread_mutex_unlock(&kc->lock);
        if ((r = pipe_req_new(k->pipe, key_len ? key : NULL, key_len, &pr)) < 0 ||
            (r = pipe_req_charge(pr, (int64_t)sizeof *q)) < 0 || !(q = calloc(1, sizeof *q))) {
                if (pr && r == 0)
                        pipe_req_uncharge(pr, (int64_t)sizeof *q);
                pipe_req_free(pr);
                count(kc, H2_RESOURCE_EXHAUSTED, time_now_ns(), len, 0, 0, -1, 0, 0, NULL);
                request_over(kc, H2_RESOURCE_EXHAUSTED, "the request does not fit the memory budget now; retry later");
                return;
        }
        q->kc = kc;
        q->pr = pr;
        q->start_ns = pr->start_ns;
        q->in_bytes = len;
        r = kserve_parse_infer(msg, len, resolve_model, q, &lim, k->budget, pr->client, err, sizeof err, &q->req,
                               &q->m);
        if (r < 0) {
                answer_infer(q, status_of(r), err);
                return;
        }
        struct pipe_run run = { .mode = PIPE_JOB_PER_IMAGE, .n = q->req->n, .numbered = true,
                                .answer_fixed = ANSWER_FIXED_MAX + strlen(q->m->name),
                                .answer_per_image = answer_per_image(q->m, q->req), .done = on_pipe_done,
                                .userdata = q };
        struct pipe_part *parts = NULL;
        if (q->req->datatype == V2_FP32) {
                /* The tensor's charge moves from the parse to the pipeline,
                 * which takes the tensor over. */
                int64_t bytes = (int64_t)(sizeof(float) * 3 * (size_t)q->m->size * (size_t)q->m->size *
                                          (size_t)q->req->n);
                budget_release(k->budget, pr->client, bytes);
                if ((r = pipe_req_reserve(pr, bytes)) < 0) {
                        budget_charge_force(k->budget, pr->client, bytes);   /* still the parse's, freed below */
                        answer_infer(q, H2_RESOURCE_EXHAUSTED, "the request's tensor does not fit the memory budget "
                                     "now; retry later");
                        return;
                }
                run.tensor = q->req->tensor;
                q->req->tensor = NULL;
        } else {
                if (!(parts = calloc((size_t)q->req->n, sizeof *parts))) {
                        answer_infer(q, H2_RESOURCE_EXHAUSTED, "out of memory; retry later");
                        return;
                }
                for (int i = 0; i < q->req->n; i++)
                        parts[i] = (struct pipe_part){ .data = q->req->images[i].data, .len = q->req->images[i].len };
                run.parts = parts;
        }
        /* The client's grpc-timeout, when shorter than the server's deadline. */
        int64_t cdl = h2_call_deadline_ns(kc->call);
        if (cdl && cdl < pr->deadline_ns)
                pr->deadline_ns = cdl;
        r = pipe_run(pr, &run);
        free(parts);   /* pipe_run copied the array */
        if (r < 0)
                answer_infer(q, status_of_api(pr->err), pr->msg);
}

/* ---- the h2 handler ---------------------------------------------------------------------------- */

_Static_assert(TRACE_STATE_MAX <= H2_MAX_HEADER_VALUE, "a kept tracestate fits a response header");

static int on_call(void *userdata, struct h2_call *call, char *msg, size_t msg_len)
{
        struct kserve *k = userdata;
        const char *path = h2_call_path(call);
        struct ks_call *kc;
        struct trace_ctx trace;
        char tp[TRACE_PARENT_LEN + 1];
        size_t i;

        /* Every answer, refusals too, names its span, as on HTTP. */
        trace_begin(&trace, h2_call_metadata(call, "traceparent"), h2_call_metadata(call, "tracestate"));
        trace_format(&trace, tp);
        h2_call_set_header(call, "traceparent", tp);
        /* The caller's tracestate, when kept (valid, with a valid
         * traceparent), goes back with it, as on HTTP. */
        if (trace.state[0])
                h2_call_set_header(call, "tracestate", trace.state);
        for (i = 0; i < sizeof methods / sizeof *methods; i++)
                if (strncmp(path, SERVICE, strlen(SERVICE)) == 0 && strcmp(path + strlen(SERVICE), methods[i].name) == 0)
                        break;
        if (i == sizeof methods / sizeof *methods) {
                atomic_fetch_add(&k->requests[GRPC_OTHER][H2_UNIMPLEMENTED], 1);
                snprintf(msg, msg_len, "no method %.200s", path);
                return H2_UNIMPLEMENTED;
        }
        /* The hook for API keys; probes stay open, as on HTTP. */
        if (!methods[i].open && k->opts.backend.authorize &&
            k->opts.backend.authorize(k->opts.backend.userdata, h2_call_metadata(call, "authorization")) < 0) {
                atomic_fetch_add(&k->requests[methods[i].method][H2_UNAUTHENTICATED], 1);
                snprintf(msg, msg_len, "a valid API key is needed (metadata authorization: Bearer KEY)");
                return H2_UNAUTHENTICATED;
        }
        if (!(kc = calloc(1, sizeof *kc))) {
                snprintf(msg, msg_len, "out of memory; retry later");
                return H2_RESOURCE_EXHAUSTED;
        }
        kc->k = k;
        kc->call = call;
        kc->trace = trace;
        kc->method = methods[i].method;
        kc->stream = methods[i].stream;
        pthread_mutex_init(&kc->lock, NULL);
        const char *rid = h2_call_metadata(call, "x-request-id");
        if (rid && strlen(rid) < sizeof kc->request_id && str_unprintable(rid) < 0)
                snprintf(kc->request_id, sizeof kc->request_id, "%s", rid);
        else
                snprintf(kc->request_id, sizeof kc->request_id, "grpc-%llx",
                         (unsigned long long)atomic_fetch_add(&k->id_seq, 1));
        h2_call_set_userdata(call, kc);
        return 0;
}

static void on_message(void *userdata, struct h2_call *call, const uint8_t *msg, size_t len)
{
        struct ks_call *kc = h2_call_userdata(call);

        /* A unary call has one message; more are the client's error, and
         * the answer to the first is already on its way. */
        if (!kc->stream && kc->messages++ > 0)
                return;
        if (kc->method == GRPC_MODEL_INFER || kc->method == GRPC_MODEL_STREAM_INFER)
                start_infer(kc, msg, len);
        else
                serve_info(kc, msg, len);
}

static void on_end(void *userdata, struct h2_call *call)
{
        struct ks_call *kc = h2_call_userdata(call);
        bool done = false;

        pthread_mutex_lock(&kc->lock);
        kc->ended = true;
        if (!kc->stream && kc->messages == 0)
                done = kc_finish_locked(kc, H2_INVALID_ARGUMENT, "no request message");
        else if (kc->stream && kc->pending == 0)
                done = kc_finish_locked(kc, H2_OK, NULL);
        pthread_mutex_unlock(&kc->lock);
        if (done)
                kc_free(kc);
}

static void on_cancel(void *userdata, struct h2_call *call)
{
        struct ks_call *kc = h2_call_userdata(call);
        bool done = false;

        pthread_mutex_lock(&kc->lock);
        kc->cancelled = true;
        /* Requests in the pipeline finish first (their answers dropped). */
        if (kc->pending == 0)
                done = kc_finish_locked(kc, H2_CANCELLED, "cancelled");
        pthread_mutex_unlock(&kc->lock);
        if (done)
                kc_free(kc);
}

static const struct h2_handler handler = {
        .on_call = on_call, .on_message = on_message, .on_end = on_end, .on_cancel = on_cancel,
};

/* ---- the service ---------------------------------------------------------------------------------- */

int kserve_new(const struct kserve_opts *opts, char *err, size_t err_len, struct kserve **ret)
{
        struct kserve *k;
        int r;

        if (!opts->pipe || !opts->backend.ready)
                return err_set(err, err_len, -EINVAL, "bad gRPC service options");
        if (!(k = calloc(1, sizeof *k)))
                return -ENOMEM;
        k->opts = *opts;
        k->pipe = opts->pipe;
        k->reg = pipe_registry(opts->pipe);
        k->budget = pipe_budget(opts->pipe);
        k->opts.h2.budget = k->budget;
        k->opts.h2.handler = &handler;
        k->opts.h2.userdata = k;
        if ((r = h2_new(&k->opts.h2, err, err_len, &k->h2)) < 0) {
                free(k);
                return r;
        }
        *ret = k;
        return 0;
}

struct kserve *kserve_free(struct kserve *k)
{
        if (!k)
                return NULL;
        h2_free(k->h2);
        free(k);
        return NULL;
}

const char *kserve_url(const struct kserve *k)
{
        return h2_url(k->h2);
}

void kserve_drain(struct kserve *k)
{
        h2_drain(k->h2);
}

int kserve_inflight(struct kserve *k)
{
        return h2_inflight(k->h2);
}

int kserve_pending(struct kserve *k)
{
        return atomic_load(&k->pending);
}

void kserve_stats_snapshot(struct kserve *k, struct grpc_stats *ret_stats)
{
        struct h2_stats hs;

        memset(ret_stats, 0, sizeof *ret_stats);
        for (int m = 0; m < GRPC_N_METHODS; m++) {
                for (int c = 0; c < GRPC_N_CODES; c++)
                        ret_stats->requests[m][c] = atomic_load(&k->requests[m][c]);
                ret_stats->seconds[m] = (double)atomic_load(&k->micros[m]) / 1e6;
        }
        ret_stats->images = atomic_load(&k->images);
        h2_stats_snapshot(k->h2, &hs);
        ret_stats->connections = hs.connections;
        ret_stats->connections_refused = hs.connections_refused;
        ret_stats->timeouts = hs.timeouts;
        ret_stats->streams_refused = hs.streams_refused;
        ret_stats->messages_too_large = hs.messages_too_large;
        ret_stats->protocol_errors = hs.protocol_errors;
        ret_stats->tls_failures = hs.tls_failures;
        ret_stats->connections_open = hs.open;
        ret_stats->inflight = h2_inflight(k->h2);
}

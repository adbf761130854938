/* v2: the KServe v2 / Open Inference Protocol for the one model effnetd
 * serves: the infer request parser (JSON tensors, Triton's
 * binary tensor data extension, BYTES inputs of encoded images) and the
 * JSON bodies (server and model metadata, Triton's model configuration,
 * infer answers with the classification extension, errors).
 *
 * The model, as v2 clients see it, has exactly one input and one output,
 * since Triton's image_client refuses anything else:
 *
 *   input  "input"          FP32 [-1, 3, H, W], NCHW, normalised as the model
 *                           expects; or BYTES [N], each element one encoded
 *                           JPEG or PNG that the server decodes and
 *                           preprocesses as /v1/classify does
 *   output "probabilities"  FP32 [-1, classes], softmax of the logits (the
 *                           scores of /v1); with parameters.classification
 *                           = K, BYTES [N, K] strings "score:index:label"
 *
 * Binary framing (extension_binary_data): the body is the JSON header of
 * Inference-Header-Content-Length bytes, then each input's binary data in
 * input order, binary_data_size bytes each: FP32 little-endian, row major;
 * BYTES as a 4-byte little-endian length and the bytes, per element.
 *
 * Pure: no HTTP, no globals; every function is reentrant. Bodies are
 * NUL-terminated (JSON) strings owned by the caller (free).
 *
 * Memory: jansson's tree costs 22 to 78 bytes per byte of JSON text (one
 * `[],` is three bytes of text and a 46-byte array), so a request is never
 * given to it whole. v2_parse_head reads the text with a scanner of its own
 * that allocates nothing, copies it into a head of at most V2_MAX_HEAD
 * bytes in which the input's "data" array stands as `[]`, and lets jansson
 * parse only that head. v2_parse_data then reads the data array straight
 * from the text into the tensor (or the decoded images). The memory of a
 * parse is thus bounded by v2_head_bytes (at most V2_HEAD_BOUND) plus
 * v2_request_data_bytes (the tensor), whatever the text holds.
 */
#ifndef EFFNET_SERVER_V2_H
#define EFFNET_SERVER_V2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api.h"

#define V2_INPUT_NAME    "input"
#define V2_OUTPUT_NAME   "probabilities"
#define V2_MODEL_VERSION "1"
#define V2_PLATFORM      "effnetd_onednn"

/* One V2-S image at 384 as JSON is about 9 MiB (Python's float repr); the
 * default fits a full default batch (8) of them with room to spare. */
#define V2_DEFAULT_MAX_BODY_BYTES ((int64_t)96 << 20)
/* Longest request "id" echoed back; longer ones are refused. */
#define V2_MAX_ID 256
/* The request JSON apart from the input's "data" array (id, inputs' names,
 * shapes, parameters, outputs): a real one is a few hundred bytes; more is
 * refused (413), since jansson builds a tree of up to 78 times its size. */
#define V2_MAX_HEAD ((size_t)8 << 10)
/* What v2_parse_head holds at most while it runs, for a JSON text of
 * json_len bytes: the head (at most V2_MAX_HEAD bytes), the places where
 * data arrays were cut from it, and jansson's tree of it, each below 128
 * bytes per byte of head (jansson's worst, `{},`, takes 71 bytes and 5
 * allocations: tests/unit/test_v2.c measures it). */
#define V2_HEAD_FACTOR 128
#define V2_HEAD_BOUND (V2_MAX_HEAD * V2_HEAD_FACTOR)
size_t v2_head_bytes(size_t json_len);
/* Arrays and objects nested deeper than this are refused (400). */
#define V2_MAX_DEPTH 32
/* FP32 input values beyond +-this are not an image's: a normalized image
 * holds values within about +-3, and even unnormalized 8-bit pixels stay
 * within 255. When logits are NaN or Inf, an image whose input went past
 * it made them (the client's error, 400); otherwise the weights did (500). */
#define V2_INPUT_PLAUSIBLE 255.0f

/* One entry of POST /v2/repository/index (Triton's model repository
 * extension). */
struct v2_index_row {
        const char *name;
        int64_t version;          /* 0: left out */
        const char *state;        /* "READY", "UNAVAILABLE", "LOADING"; NULL: left out */
        const char *reason;       /* "" or NULL: left out */
};

/* The index: a JSON array of the rows. -ENOMEM. */
int v2_repository_index_body(const struct v2_index_row *rows, int n, char **ret_body);

/* What the bodies describe. */
struct v2_model {
        const char *name;         /* the model's name (its variant in a one-model server) */
        int64_t version;          /* its version, >= 1 (0 is taken as 1) */
        int size;                 /* input height = width */
        int classes;
        int max_batch;            /* the batcher's */
        int64_t max_delay_us;     /* the batcher's */
        const int *exec_batch;    /* executor batch sizes, ascending */
        int n_exec;
        const struct api_labels *labels;  /* for classification strings */
        const char *labels_source;         /* where they come from, for v2_config_body's "parameters";
                                            * NULL: api_labels_source(labels) */
        const struct api_weights *weights; /* where the weights come from, for v2_config_body's
                                            * "parameters"; NULL: left out */
};

/* Client-controllable resources of one infer request. */
struct v2_limits {
        int max_images;           /* N of the input (413 beyond) */
        size_t max_image_bytes;   /* one encoded image of a BYTES input (413 beyond) */
};

enum v2_datatype { V2_FP32, V2_BYTES };

/* One encoded image of a BYTES input: into the body given to the parser,
 * or into the request's own storage (base64 in JSON). */
struct v2_image {
        const uint8_t *data;
        size_t len;
};

/* A parsed infer request. */
struct v2_request {
        char *id;                 /* owned; NULL when the request had none */
        int n;                    /* images, 1..max_images */
        int datatype;             /* enum v2_datatype of the input */
        float *tensor;            /* FP32: [n][3][size][size], owned (callers may take it: set NULL) */
        struct v2_image *images;  /* BYTES: [n], owned array */
        uint8_t *decoded;         /* owned: storage of base64-decoded images */
        bool binary_output;       /* answer with the output as binary data */
        int classification;       /* K strings per image instead of probabilities; 0: none */
        float *range;             /* FP32: [n][2] the least and the greatest value of each image, owned */
        /* Private to the parser, between v2_parse_head and v2_parse_data:
         * where the input's data is in the body. */
        size_t data_off, data_len;  /* its JSON "data" array; data_len 0: binary data */
        size_t bin_off;             /* the binary data after the JSON header */
        bool parsed;                /* v2_parse_data ran and succeeded */
};

/* Parses an infer request body of len bytes for model m. header_len: the
 * Inference-Header-Content-Length value, or -1 when the request had none.
 * BYTES images of binary data point into body, which must outlive the
 * request's use of them. Errors (with the message for the client in err):
 * -EBADMSG for anything malformed or not matching the model (400), -E2BIG
 * for N or an image over a limit (413), -ENOMEM. */
int v2_parse_infer(const uint8_t *body, size_t len, int64_t header_len, const struct v2_model *m,
                   const struct v2_limits *lim, char *err, size_t err_len, struct v2_request **ret_request);
struct v2_request *v2_request_free(struct v2_request *r);

/* v2_parse_infer in two steps, so that a caller can charge the memory of
 * the second before it is taken. v2_parse_head checks the whole text and
 * parses everything but the data (holding at most v2_head_bytes of its
 * JSON's length meanwhile, freed when it returns); *ret_request then has its id, n,
 * datatype and outputs, and no tensor or images yet. v2_parse_data, with
 * the same body, m and lim, reads the data into it, allocating at most
 * v2_request_data_bytes (which stays allocated with the request). Errors
 * as v2_parse_infer's; after a failed v2_parse_data, free the request. */
int v2_parse_head(const uint8_t *body, size_t len, int64_t header_len, const struct v2_model *m,
                  const struct v2_limits *lim, char *err, size_t err_len, struct v2_request **ret_request);
size_t v2_request_data_bytes(const struct v2_request *r, const struct v2_model *m, const struct v2_limits *lim);
int v2_parse_data(struct v2_request *r, const uint8_t *body, size_t len, const struct v2_model *m,
                  const struct v2_limits *lim, char *err, size_t err_len);

/* Whether logits [r->n][classes] are all finite: 0; -ERANGE when an image
 * whose FP32 input went past +-V2_INPUT_PLAUSIBLE made them NaN or Inf (the
 * client's values overflowed the network; err names the image and its
 * range, for a 400); -EDOM when an image within it did, or an image of
 * BYTES did (the weights are broken: 500). */
int v2_check_logits(const struct v2_model *m, const struct v2_request *r, const float *logits, char *err,
                    size_t err_len);

/* The infer answer for request r: logits [r->n][classes] are turned into
 * probabilities in place. ret_body holds ret_len bytes: the JSON (its
 * length in ret_header_len) followed by the binary output data when r asked
 * for it (ret_header_len == ret_len otherwise), and a NUL. -EDOM when a
 * logit is NaN or Inf (broken weights), -ENOMEM. */
int v2_infer_body(const struct v2_model *m, const struct v2_request *r, float *logits, char **ret_body,
                  size_t *ret_len, size_t *ret_header_len);

/* {"name":"effnetd","version":...,"extensions":[...]} */
int v2_server_body(char **ret_body);
/* {name, versions, platform, inputs, outputs}: "versions" the n of
 * versions (every version of the model available, as KServe v2 says),
 * or m's own when n is 0. */
int v2_model_body(const struct v2_model *m, const int64_t *versions, int n, char **ret_body);
/* Triton's model configuration (extension_model_configuration). */
int v2_config_body(const struct v2_model *m, char **ret_body);
/* {"error":"<message>"}, exactly: clients format their exceptions from it. */
int v2_error_body(const char *message, char **ret_body);

/* Base64 (RFC 4648, standard alphabet; the final padding may be left out)
 * of len bytes into out (at least len / 4 * 3 + 3 bytes). -EBADMSG for
 * anything else. */
int v2_base64_decode(const char *in, size_t len, uint8_t *out, size_t *ret_len);

#endif

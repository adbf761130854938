/* grpc_stats: the gRPC service's methods and counters as plain data. They
 * belong to the kserve module (server/kserve.h), which counts them; they
 * have a header of their own, with no nghttp2 or protobuf-c, so that the
 * metrics module (server/metrics.h) can label and render them beside the
 * HTTP ones (protocol "grpc"). Everything here is immutable.
 */
#ifndef EFFNET_SERVER_GRPC_STATS_H
#define EFFNET_SERVER_GRPC_STATS_H

#include <stdint.h>

enum grpc_method {
        GRPC_SERVER_LIVE,
        GRPC_SERVER_READY,
        GRPC_MODEL_READY,
        GRPC_SERVER_METADATA,
        GRPC_MODEL_METADATA,
        GRPC_MODEL_INFER,
        GRPC_MODEL_STREAM_INFER,
        GRPC_MODEL_CONFIG,
        GRPC_OTHER,                     /* unknown methods */
        GRPC_N_METHODS,
};

static inline const char *grpc_method_name(enum grpc_method m)
{
        static const char *const names[GRPC_N_METHODS] = {
                [GRPC_SERVER_LIVE] = "ServerLive",         [GRPC_SERVER_READY] = "ServerReady",
                [GRPC_MODEL_READY] = "ModelReady",         [GRPC_SERVER_METADATA] = "ServerMetadata",
                [GRPC_MODEL_METADATA] = "ModelMetadata",   [GRPC_MODEL_INFER] = "ModelInfer",
                [GRPC_MODEL_STREAM_INFER] = "ModelStreamInfer", [GRPC_MODEL_CONFIG] = "ModelConfig",
                [GRPC_OTHER] = "other",
        };
        return names[m];
}

/* gRPC status codes 0..16. */
#define GRPC_N_CODES 17

static inline const char *grpc_code_name(int code)
{
        static const char *const names[GRPC_N_CODES] = {
                "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
        };
        return code >= 0 && code < GRPC_N_CODES ? names[code] : "UNKNOWN";
}

/* The service's counters and gauges at one moment. A stream's requests are
 * counted one by one (method ModelStreamInfer), and so are their statuses. */
struct grpc_stats {
        uint64_t requests[GRPC_N_METHODS][GRPC_N_CODES];   /* answered, by method and status */
        double seconds[GRPC_N_METHODS];                    /* summed time from message to answer */
        uint64_t images;                                   /* classified and answered */
        uint64_t connections, connections_refused, timeouts, streams_refused, messages_too_large,
                protocol_errors, tls_failures;             /* the transport's (server/h2.h) */
        int connections_open;
        int inflight;                                      /* calls being served */
};

#endif

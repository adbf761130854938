/* routes: the HTTP server's one route table and its matcher. Each route is
 * a method, a path pattern, its route id (what /metrics counts it under,
 * server/http_stats.h), whether the admin listener serves it, whether the
 * main listener answers it without an API key, and its body limit. The
 * http module (server/http.h) keeps one handler per route id; this module
 * only says which route a request is, so that it can be tested without a
 * server.
 *
 *   struct routes_match m;
 *   int r = routes_match("POST", "/v2/models/m/versions/2/infer", 0, &m);
 *   // r == 0, m.id == HTTP_ROUTE_V2_INFER, m.model "m" (m.model_len 1),
 *   // m.version "2"; -ENOENT: 404; -EOPNOTSUPP: 405 with Allow: m.allow
 *
 * Patterns are literal but for the segments {model} and {version}, each
 * one non-empty path segment (any bytes but '/'). Paths match exactly: a
 * trailing '/' is another path ("/v2/" is a row of its own). GET routes
 * answer HEAD too. Immutable data: thread-safe.
 */
#ifndef EFFNET_SERVER_ROUTES_H
#define EFFNET_SERVER_ROUTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http_stats.h"

/* What a route's body may hold: the limits are settings, which the http
 * module knows. GET routes answer at their headers and read no body. */
enum routes_body {
        ROUTES_BODY_NONE,
        ROUTES_BODY_CLASSIFY,     /* max-body-bytes */
        ROUTES_BODY_V2,           /* v2-max-body-bytes */
        ROUTES_BODY_CONTROL,      /* HTTP_CONTROL_MAX_BODY: a load's config */
};

/* Route flags. */
#define ROUTES_ADMIN (1u << 0)    /* the admin listener serves it (probes and metrics) */
#define ROUTES_OPEN  (1u << 1)    /* answered without an API key: orchestrators' probes need no secret */
#define ROUTES_UI    (1u << 2)    /* the try-it page: only when it is served */

struct route {
        const char *method;       /* "GET" (and HEAD) or "POST" */
        const char *pattern;      /* "/v2/models/{model}/versions/{version}/infer" */
        enum http_route id;
        unsigned flags;           /* ROUTES_* */
        enum routes_body body;
};

/* Where a request goes, for routes_match's listener argument. */
#define ROUTES_ON_ADMIN (1u << 0) /* the admin listener: only ROUTES_ADMIN routes */
#define ROUTES_WITH_UI  (1u << 1) /* the try-it page is served */

/* A request path matched. model and version point into the path given
 * (not NUL-terminated); NULL when the route has none. */
struct routes_match {
        const struct route *route;   /* the route of the path; NULL: none (404) */
        enum http_route id;          /* what the request is counted under: the route's, or
                                      * HTTP_ROUTE_V2_OTHER for other paths under /v2 on the main
                                      * listener, HTTP_ROUTE_OTHER for any other */
        const char *allow;           /* the methods of the path (Allow, for a 405); NULL: none */
        const char *model;
        size_t model_len;
        const char *version;
        size_t version_len;
};

/* The route of method and path (without its query) on a listener (0 or
 * ROUTES_ON_ADMIN | ROUTES_WITH_UI), into *ret_match, which is written
 * whatever the result, since a request that matches nothing is still
 * answered and counted: 0 when a route has both the path and the method;
 * -EOPNOTSUPP when routes have the path but not the method (a 405: route,
 * allow and the captures are those of the path's first route); -ENOENT
 * when none has the path (404). */
int routes_match(const char *method, const char *path, unsigned listener, struct routes_match *ret_match);

/* The version a match names: 0 when it names none, or a positive integer
 * without leading zeros (at most 18 digits); -EINVAL for anything else
 * (no such version). */
int routes_version(const struct routes_match *m, int64_t *ret_version);

/* The whole table, in matching order, and its length: for tests and docs. */
const struct route *routes_table(size_t *ret_n);

#endif

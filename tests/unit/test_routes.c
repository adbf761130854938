/* Unit tests of the HTTP route table and its matcher (server/routes.h):
 * every route with and without a version, HEAD, wrong methods (405 and
 * Allow), unknown paths (404, counted as v1's or v2's), the admin
 * listener, the try-it page, trailing slashes, odd and over-long segments. */
#include "check.h"
#include "routes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct want {
        const char *method, *path;
        unsigned listener;
        int result;
        enum http_route id;
        const char *model, *version;    /* NULL: none captured */
};

/* Whether a capture is the text want (or absent when want is NULL). */
static bool capture_is(const char *got, size_t len, const char *want)
{
        if (!want)
                return !got && len == 0;
        return got && len == strlen(want) && memcmp(got, want, len) == 0;
}

static void expect(const struct want *w)
{
        struct routes_match m;
        int r = routes_match(w->method, w->path, w->listener, &m);

        CHECK_MSG(r == w->result, "%s %s (listener %u): result %d, want %d", w->method, w->path, w->listener, r,
                  w->result);
        CHECK_MSG(m.id == w->id, "%s %s (listener %u): route %s, want %s", w->method, w->path, w->listener,
                  http_route_path(m.id), http_route_path(w->id));
        CHECK_MSG((m.route != NULL) == (w->result != -ENOENT), "%s %s: a route exactly when the path has one",
                  w->method, w->path);
        CHECK_MSG(m.route == NULL || m.route->id == m.id, "%s %s: the id is its route's", w->method, w->path);
        CHECK_MSG(capture_is(m.model, m.model_len, w->model), "%s %s: model '%.*s', want '%s'", w->method, w->path,
                  (int)m.model_len, m.model ? m.model : "", w->model ? w->model : "(none)");
        CHECK_MSG(capture_is(m.version, m.version_len, w->version), "%s %s: version '%.*s', want '%s'", w->method,
                  w->path, (int)m.version_len, m.version ? m.version : "", w->version ? w->version : "(none)");
}

#define MAIN 0u
#define ADMIN ROUTES_ON_ADMIN
#define UI ROUTES_WITH_UI

/* Every route, by the paths clients send. */
static void every_route(void)
{
        const struct want w[] = {
                { "POST", "/v1/classify", MAIN, 0, HTTP_ROUTE_CLASSIFY, NULL, NULL },
                { "POST", "/v1/models/b0/classify", MAIN, 0, HTTP_ROUTE_MODEL_CLASSIFY, "b0", NULL },
                { "POST", "/v1/models/b0/versions/2/classify", MAIN, 0, HTTP_ROUTE_MODEL_CLASSIFY, "b0", "2" },
                { "GET", "/v1/models", MAIN, 0, HTTP_ROUTE_MODELS, NULL, NULL },
                { "GET", "/healthz", MAIN, 0, HTTP_ROUTE_HEALTHZ, NULL, NULL },
                { "GET", "/readyz", MAIN, 0, HTTP_ROUTE_READYZ, NULL, NULL },
                { "GET", "/metrics", MAIN, 0, HTTP_ROUTE_METRICS, NULL, NULL },
                { "GET", "/", UI, 0, HTTP_ROUTE_UI, NULL, NULL },
                { "GET", "/ui/app.js", UI, 0, HTTP_ROUTE_UI_ASSET, NULL, NULL },
                { "GET", "/ui/app.css", UI, 0, HTTP_ROUTE_UI_ASSET, NULL, NULL },
                { "GET", "/v2", MAIN, 0, HTTP_ROUTE_V2_SERVER, NULL, NULL },
                { "GET", "/v2/", MAIN, 0, HTTP_ROUTE_V2_SERVER, NULL, NULL },
                { "GET", "/v2/health/live", MAIN, 0, HTTP_ROUTE_V2_LIVE, NULL, NULL },
                { "GET", "/v2/health/ready", MAIN, 0, HTTP_ROUTE_V2_READY, NULL, NULL },
                { "GET", "/v2/models/m", MAIN, 0, HTTP_ROUTE_V2_MODEL, "m", NULL },
                { "GET", "/v2/models/m/versions/7", MAIN, 0, HTTP_ROUTE_V2_MODEL, "m", "7" },
                { "GET", "/v2/models/m/ready", MAIN, 0, HTTP_ROUTE_V2_MODEL_READY, "m", NULL },
                { "GET", "/v2/models/m/versions/1/ready", MAIN, 0, HTTP_ROUTE_V2_MODEL_READY, "m", "1" },
                { "GET", "/v2/models/m/config", MAIN, 0, HTTP_ROUTE_V2_MODEL_CONFIG, "m", NULL },
                { "GET", "/v2/models/m/versions/1/config", MAIN, 0, HTTP_ROUTE_V2_MODEL_CONFIG, "m", "1" },
                { "POST", "/v2/models/efficientnetv2-t/infer", MAIN, 0, HTTP_ROUTE_V2_INFER, "efficientnetv2-t", NULL },
                { "POST", "/v2/models/m/versions/1/infer", MAIN, 0, HTTP_ROUTE_V2_INFER, "m", "1" },
                { "POST", "/v2/repository/index", MAIN, 0, HTTP_ROUTE_V2_REPO_INDEX, NULL, NULL },
                { "POST", "/v2/repository/models/b0/load", MAIN, 0, HTTP_ROUTE_V2_REPO_CONTROL, "b0", NULL },
                { "POST", "/v2/repository/models/b0/unload", MAIN, 0, HTTP_ROUTE_V2_REPO_CONTROL, "b0", NULL },
                /* HEAD is GET without the body. */
                { "HEAD", "/healthz", MAIN, 0, HTTP_ROUTE_HEALTHZ, NULL, NULL },
                { "HEAD", "/v2/models/m/versions/1/ready", MAIN, 0, HTTP_ROUTE_V2_MODEL_READY, "m", "1" },
                /* The segment "versions" is a model's name where a name goes. */
                { "GET", "/v2/models/versions", MAIN, 0, HTTP_ROUTE_V2_MODEL, "versions", NULL },
                { "GET", "/v2/models/versions/ready", MAIN, 0, HTTP_ROUTE_V2_MODEL_READY, "versions", NULL },
                { "GET", "/v2/models/m/versions/ready", MAIN, 0, HTTP_ROUTE_V2_MODEL, "m", "ready" },
                { "POST", "/v1/models/versions/classify", MAIN, 0, HTTP_ROUTE_MODEL_CLASSIFY, "versions", NULL },
        };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
                expect(&w[i]);
}

/* Paths that are no route: 404, counted as v2's under /v2 only. */
static void unknown_paths(void)
{
        const struct want w[] = {
                { "GET", "/v2x", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v1", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/V1/MODELS", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "healthz", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "DELETE", "/nothing", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v2/health", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/models", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/models/", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/models//ready", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "POST", "/v2/models//infer", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/models/m/versions", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/models/m/versions/", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/models/m/versions//ready", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "POST", "/v2/models/m/infer/x", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/models/x/y/z", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/repository", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "POST", "/v2/repository/models/b0", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "POST", "/v2/repository/models/b0/reload", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "POST", "/v2/repository/models//load", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "POST", "/v1/classify/x", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "POST", "/v1/models/b0/versions/classify", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "POST", "/v1/models/b0/versions//classify", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "POST", "/v1/models//classify", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                /* Trailing slashes are other paths (but /v2/, which Triton's clients use). */
                { "GET", "/healthz/", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "POST", "/v1/classify/", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v1/models/", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v2/health/live/", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "/v2/models/m/", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "POST", "/v2/models/m/infer/", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                { "GET", "//healthz", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v2//health/live", MAIN, -ENOENT, HTTP_ROUTE_V2_OTHER, NULL, NULL },
                /* http.c leaves %00 undecoded, so that it never ends a path early. */
                { "GET", "/healthz%00x", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/healthz?x=1", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                /* The try-it page only when it is served, and only its assets. */
                { "GET", "/", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/ui/app.js", MAIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/ui/", UI, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/ui/other.js", UI, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/index.html", UI, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
        };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
                expect(&w[i]);
}

/* Segments are taken as they come (decoded by the server): names are
 * looked up, not judged, here. */
static void odd_segments(void)
{
        const struct want w[] = {
                { "GET", "/v2/models/a%20b/ready", MAIN, 0, HTTP_ROUTE_V2_MODEL_READY, "a%20b", NULL },
                { "GET", "/v2/models/a b/ready", MAIN, 0, HTTP_ROUTE_V2_MODEL_READY, "a b", NULL },
                { "GET", "/v2/models/%00/ready", MAIN, 0, HTTP_ROUTE_V2_MODEL_READY, "%00", NULL },
                { "GET", "/v2/models/../ready", MAIN, 0, HTTP_ROUTE_V2_MODEL_READY, "..", NULL },
                { "GET", "/v2/models/\xc3\xa9t\xc3\xa9", MAIN, 0, HTTP_ROUTE_V2_MODEL, "\xc3\xa9t\xc3\xa9", NULL },
                { "GET", "/v2/models/{model}", MAIN, 0, HTTP_ROUTE_V2_MODEL, "{model}", NULL },
                { "POST", "/v2/models/m/versions/-1/infer", MAIN, 0, HTTP_ROUTE_V2_INFER, "m", "-1" },
                { "POST", "/v1/models/m;x/versions/01/classify", MAIN, 0, HTTP_ROUTE_MODEL_CLASSIFY, "m;x", "01" },
        };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
                expect(&w[i]);
}

/* Names of any length are captured whole: their limits are the
 * registry's (an unknown model, 404) and the repository's (400). */
static void long_names(void)
{
        size_t n = 100000;
        char *path = malloc(n + 64);
        struct routes_match m;

        REQUIRE(path);
        strcpy(path, "/v2/repository/models/");
        memset(path + strlen(path), 'x', n);
        strcpy(path + strlen("/v2/repository/models/") + n, "/unload");
        CHECK_EQ(routes_match("POST", path, MAIN, &m), 0);
        CHECK_EQ(m.id, HTTP_ROUTE_V2_REPO_CONTROL);
        CHECK_EQ(m.model_len, n);
        strcpy(path, "/v2/models/m/versions/");
        memset(path + strlen(path), '9', n);
        strcpy(path + strlen("/v2/models/m/versions/") + n, "/infer");
        CHECK_EQ(routes_match("POST", path, MAIN, &m), 0);
        CHECK_EQ(m.version_len, n);
        int64_t v = -1;
        CHECK_EQ(routes_version(&m, &v), -EINVAL);
        CHECK_EQ(v, -1);
        free(path);
}

/* The version a path names. */
static void versions(void)
{
        const struct {
                const char *path;
                int result;
                int64_t version;
        } w[] = {
                { "/v2/models/m", 0, 0 },
                { "/v2/models/m/versions/1", 0, 1 },
                { "/v2/models/m/versions/42", 0, 42 },
                { "/v2/models/m/versions/999999999999999999", 0, 999999999999999999LL },
                { "/v2/models/m/versions/1000000000000000000", -EINVAL, 0 },
                { "/v2/models/m/versions/0", -EINVAL, 0 },
                { "/v2/models/m/versions/01", -EINVAL, 0 },
                { "/v2/models/m/versions/latest", -EINVAL, 0 },
                { "/v2/models/m/versions/-1", -EINVAL, 0 },
                { "/v2/models/m/versions/+1", -EINVAL, 0 },
                { "/v2/models/m/versions/1x", -EINVAL, 0 },
                { "/v2/models/m/versions/1%20", -EINVAL, 0 },
        };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
                struct routes_match m;
                int64_t v = -7;
                CHECK_MSG(routes_match("GET", w[i].path, MAIN, &m) == 0, "%s", w[i].path);
                int r = routes_version(&m, &v);
                CHECK_MSG(r == w[i].result, "%s: %d, want %d", w[i].path, r, w[i].result);
                CHECK_MSG(r < 0 ? v == -7 : v == w[i].version, "%s: version %lld", w[i].path, (long long)v);
        }
}

/* A path with another method: 405 with the path's methods, counted under
 * the path's route; a path of no route: 404 without Allow. */
static void wrong_methods(void)
{
        const struct {
                const char *method, *path;
                unsigned listener;
                enum http_route id;
                const char *allow;
        } w[] = {
                { "GET", "/v1/classify", MAIN, HTTP_ROUTE_CLASSIFY, "POST" },
                { "HEAD", "/v1/classify", MAIN, HTTP_ROUTE_CLASSIFY, "POST" },
                { "PUT", "/v1/classify", MAIN, HTTP_ROUTE_CLASSIFY, "POST" },
                { "post", "/v1/classify", MAIN, HTTP_ROUTE_CLASSIFY, "POST" },
                { "GET", "/v1/models/b0/versions/1/classify", MAIN, HTTP_ROUTE_MODEL_CLASSIFY, "POST" },
                { "POST", "/healthz", MAIN, HTTP_ROUTE_HEALTHZ, "GET, HEAD" },
                { "DELETE", "/readyz", MAIN, HTTP_ROUTE_READYZ, "GET, HEAD" },
                { "PUT", "/metrics", MAIN, HTTP_ROUTE_METRICS, "GET, HEAD" },
                { "POST", "/v1/models", MAIN, HTTP_ROUTE_MODELS, "GET, HEAD" },
                { "POST", "/", UI, HTTP_ROUTE_UI, "GET, HEAD" },
                { "GET", "/v2/models/m/infer", MAIN, HTTP_ROUTE_V2_INFER, "POST" },
                { "POST", "/v2/models/m", MAIN, HTTP_ROUTE_V2_MODEL, "GET, HEAD" },
                { "DELETE", "/v2/models/m/versions/1/config", MAIN, HTTP_ROUTE_V2_MODEL_CONFIG, "GET, HEAD" },
                { "POST", "/v2/health/live", MAIN, HTTP_ROUTE_V2_LIVE, "GET, HEAD" },
                { "GET", "/v2/repository/index", MAIN, HTTP_ROUTE_V2_REPO_INDEX, "POST" },
                { "GET", "/v2/repository/models/b0/load", MAIN, HTTP_ROUTE_V2_REPO_CONTROL, "POST" },
                { "POST", "/metrics", ADMIN, HTTP_ROUTE_METRICS, "GET, HEAD" },
        };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
                struct routes_match m;
                int r = routes_match(w[i].method, w[i].path, w[i].listener, &m);
                CHECK_MSG(r == -EOPNOTSUPP && m.id == w[i].id && m.route && m.allow &&
                                  strcmp(m.allow, w[i].allow) == 0,
                          "%s %s: %d %s Allow %s", w[i].method, w[i].path, r, http_route_path(m.id),
                          m.allow ? m.allow : "(none)");
        }
        struct routes_match m;
        CHECK_EQ(routes_match("GET", "/nothing", MAIN, &m), -ENOENT);
        CHECK(m.allow == NULL);
        /* The captures of a 405 are the path's. */
        CHECK_EQ(routes_match("GET", "/v2/models/m/versions/3/infer", MAIN, &m), -EOPNOTSUPP);
        CHECK(capture_is(m.model, m.model_len, "m") && capture_is(m.version, m.version_len, "3"));
}

/* The admin listener serves the probes and /metrics, nothing else: every
 * other path is no route there, v1's or v2's. */
static void admin_listener(void)
{
        const struct want w[] = {
                { "GET", "/healthz", ADMIN, 0, HTTP_ROUTE_HEALTHZ, NULL, NULL },
                { "HEAD", "/readyz", ADMIN, 0, HTTP_ROUTE_READYZ, NULL, NULL },
                { "GET", "/metrics", ADMIN, 0, HTTP_ROUTE_METRICS, NULL, NULL },
                { "GET", "/v2/health/live", ADMIN, 0, HTTP_ROUTE_V2_LIVE, NULL, NULL },
                { "GET", "/v2/health/ready", ADMIN, 0, HTTP_ROUTE_V2_READY, NULL, NULL },
                { "POST", "/v1/classify", ADMIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v1/classify", ADMIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v1/models", ADMIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/", ADMIN | UI, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v2", ADMIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v2/models/m", ADMIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "POST", "/v2/models/m/infer", ADMIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "POST", "/v2/repository/index", ADMIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
                { "GET", "/v2/nothing", ADMIN, -ENOENT, HTTP_ROUTE_OTHER, NULL, NULL },
        };
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
                expect(&w[i]);
}

/* The path of a row with its captures filled: m for {model}, 3 for {version}. */
static void instance(const char *pattern, char *out, size_t len)
{
        size_t o = 0;

        for (const char *p = pattern; *p && o + 2 < len;) {
                if (strncmp(p, "{model}", 7) == 0) {
                        out[o++] = 'm';
                        p += 7;
                } else if (strncmp(p, "{version}", 9) == 0) {
                        out[o++] = '3';
                        p += 9;
                } else {
                        out[o++] = *p++;
                }
        }
        out[o] = '\0';
}

/* The table itself: each row is reached by its own paths and no other
 * row's; only the probes are open, only the probes and /metrics on the
 * admin listener; bodies by kind. */
static void table_rows(void)
{
        size_t n;
        const struct route *t = routes_table(&n);
        int open = 0, admin = 0;

        CHECK(n >= 20);
        for (size_t i = 0; i < n; i++) {
                char path[256];
                struct routes_match m;
                instance(t[i].pattern, path, sizeof path);
                CHECK_MSG(routes_match(t[i].method, path, UI, &m) == 0 && m.route == &t[i], "row %zu %s %s", i,
                          t[i].method, t[i].pattern);
                for (size_t k = 0; k < i; k++)
                        CHECK_MSG(strcmp(t[i].pattern, t[k].pattern) != 0 || strcmp(t[i].method, t[k].method) != 0,
                                  "rows %zu and %zu are both %s %s", k, i, t[i].method, t[i].pattern);
                bool post = strcmp(t[i].method, "POST") == 0;
                CHECK_MSG(post || strcmp(t[i].method, "GET") == 0, "%s: GET or POST", t[i].pattern);
                CHECK_MSG(post == (t[i].body != ROUTES_BODY_NONE), "%s: a body exactly for POST", t[i].pattern);
                CHECK_MSG(t[i].id != HTTP_ROUTE_OTHER && t[i].id != HTTP_ROUTE_V2_OTHER && t[i].id < HTTP_N_ROUTES,
                          "%s: a route id", t[i].pattern);
                bool v2 = strncmp(t[i].pattern, "/v2", 3) == 0;
                CHECK_MSG(strcmp(http_route_protocol(t[i].id), v2 ? "v2" : "v1") == 0, "%s: counted as %s",
                          t[i].pattern, http_route_protocol(t[i].id));
                open += (t[i].flags & ROUTES_OPEN) != 0;
                admin += (t[i].flags & ROUTES_ADMIN) != 0;
                if (t[i].flags & (ROUTES_OPEN | ROUTES_ADMIN))
                        CHECK_MSG(!post, "%s: probes and metrics are GET", t[i].pattern);
                if (t[i].flags & ROUTES_OPEN)
                        CHECK_MSG(t[i].flags & ROUTES_ADMIN, "%s: an open probe is the admin listener's too",
                                  t[i].pattern);
                if (t[i].id == HTTP_ROUTE_V2_INFER)
                        CHECK(t[i].body == ROUTES_BODY_V2);
                else if (t[i].id == HTTP_ROUTE_CLASSIFY || t[i].id == HTTP_ROUTE_MODEL_CLASSIFY)
                        CHECK(t[i].body == ROUTES_BODY_CLASSIFY);
                else if (post)
                        CHECK_MSG(t[i].body == ROUTES_BODY_CONTROL, "%s", t[i].pattern);
        }
        CHECK_EQ(open, 4);    /* /healthz, /readyz, /v2/health/live, /v2/health/ready */
        CHECK_EQ(admin, 5);   /* and /metrics */
        /* Every route id but the two "other"s has a row. */
        for (int id = 0; id < HTTP_N_ROUTES; id++) {
                bool found = false;
                for (size_t i = 0; i < n; i++)
                        found |= t[i].id == (enum http_route)id;
                CHECK_MSG(found == (id != HTTP_ROUTE_OTHER && id != HTTP_ROUTE_V2_OTHER), "route %s has a row",
                          http_route_path((enum http_route)id));
        }
}

int main(void)
{
        every_route();
        unknown_paths();
        odd_segments();
        long_names();
        versions();
        wrong_methods();
        admin_listener();
        table_rows();
        return CHECK_DONE();
}

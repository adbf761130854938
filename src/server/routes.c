/* routes: the HTTP server's route table and its matcher. */
#include "routes.h"
#include "util.h"

#include <errno.h>
#include <string.h>

#define V1 "/v1/models/{model}"
#define V1_VERSION "/v1/models/{model}/versions/{version}"
#define V2 "/v2/models/{model}"
#define V2_VERSION "/v2/models/{model}/versions/{version}"
#define ADMIN_OPEN (ROUTES_ADMIN | ROUTES_OPEN)

/* Every path the server answers. The try-it page's rows are the assets of
 * server/ui.c. */
static const struct route table[] = {
        /* effnetd's own API */
        { "POST", "/v1/classify", HTTP_ROUTE_CLASSIFY, 0, ROUTES_BODY_CLASSIFY },
        { "POST", V1 "/classify", HTTP_ROUTE_MODEL_CLASSIFY, 0, ROUTES_BODY_CLASSIFY },
        { "POST", V1_VERSION "/classify", HTTP_ROUTE_MODEL_CLASSIFY, 0, ROUTES_BODY_CLASSIFY },
        { "GET", "/v1/models", HTTP_ROUTE_MODELS, 0, ROUTES_BODY_NONE },
        { "GET", "/healthz", HTTP_ROUTE_HEALTHZ, ADMIN_OPEN, ROUTES_BODY_NONE },
        { "GET", "/readyz", HTTP_ROUTE_READYZ, ADMIN_OPEN, ROUTES_BODY_NONE },
        { "GET", "/metrics", HTTP_ROUTE_METRICS, ROUTES_ADMIN, ROUTES_BODY_NONE },
        { "GET", "/", HTTP_ROUTE_UI, ROUTES_UI, ROUTES_BODY_NONE },
        { "GET", "/ui/app.js", HTTP_ROUTE_UI_ASSET, ROUTES_UI, ROUTES_BODY_NONE },
        { "GET", "/ui/app.css", HTTP_ROUTE_UI_ASSET, ROUTES_UI, ROUTES_BODY_NONE },
        /* KServe v2 */
        { "GET", "/v2", HTTP_ROUTE_V2_SERVER, 0, ROUTES_BODY_NONE },
        { "GET", "/v2/", HTTP_ROUTE_V2_SERVER, 0, ROUTES_BODY_NONE },
        { "GET", "/v2/health/live", HTTP_ROUTE_V2_LIVE, ADMIN_OPEN, ROUTES_BODY_NONE },
        { "GET", "/v2/health/ready", HTTP_ROUTE_V2_READY, ADMIN_OPEN, ROUTES_BODY_NONE },
        { "GET", V2, HTTP_ROUTE_V2_MODEL, 0, ROUTES_BODY_NONE },
        { "GET", V2_VERSION, HTTP_ROUTE_V2_MODEL, 0, ROUTES_BODY_NONE },
        { "GET", V2 "/ready", HTTP_ROUTE_V2_MODEL_READY, 0, ROUTES_BODY_NONE },
        { "GET", V2_VERSION "/ready", HTTP_ROUTE_V2_MODEL_READY, 0, ROUTES_BODY_NONE },
        { "GET", V2 "/config", HTTP_ROUTE_V2_MODEL_CONFIG, 0, ROUTES_BODY_NONE },
        { "GET", V2_VERSION "/config", HTTP_ROUTE_V2_MODEL_CONFIG, 0, ROUTES_BODY_NONE },
        { "POST", V2 "/infer", HTTP_ROUTE_V2_INFER, 0, ROUTES_BODY_V2 },
        { "POST", V2_VERSION "/infer", HTTP_ROUTE_V2_INFER, 0, ROUTES_BODY_V2 },
        /* Triton's model repository extension */
        { "POST", "/v2/repository/index", HTTP_ROUTE_V2_REPO_INDEX, 0, ROUTES_BODY_CONTROL },
        { "POST", "/v2/repository/models/{model}/load", HTTP_ROUTE_V2_REPO_CONTROL, 0, ROUTES_BODY_CONTROL },
        { "POST", "/v2/repository/models/{model}/unload", HTTP_ROUTE_V2_REPO_CONTROL, 0, ROUTES_BODY_CONTROL },
};

const struct route *routes_table(size_t *ret_n)
{
        *ret_n = ARRAY_SIZE(table);
        return table;
}

/* Whether path is pattern, its {model} and {version} segments into *m. */
static bool pattern_match(const char *pattern, const char *path, struct routes_match *m)
{
        struct routes_match c = { 0 };

        while (*pattern) {
                if (*pattern != '{') {
                        if (*pattern++ != *path++)
                                return false;
                        continue;
                }
                size_t n = strcspn(path, "/");
                if (n == 0)
                        return false;
                if (strncmp(pattern, "{model}", 7) == 0)
                        c.model = path, c.model_len = n;
                else
                        c.version = path, c.version_len = n;
                pattern = strchr(pattern, '}') + 1;
                path += n;
        }
        if (*path != '\0')
                return false;
        m->model = c.model, m->model_len = c.model_len;
        m->version = c.version, m->version_len = c.version_len;
        return true;
}

static bool method_is(const struct route *r, const char *method)
{
        return strcmp(r->method, method) == 0 || (strcmp(r->method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

int routes_match(const char *method, const char *path, unsigned listener, struct routes_match *ret_match)
{
        struct routes_match m = { .id = HTTP_ROUTE_OTHER };
        bool get = false, post = false;

        for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
                const struct route *r = &table[i];
                struct routes_match c = { 0 };

                if (((listener & ROUTES_ON_ADMIN) && !(r->flags & ROUTES_ADMIN)) ||
                    ((r->flags & ROUTES_UI) && !(listener & ROUTES_WITH_UI)) || !pattern_match(r->pattern, path, &c))
                        continue;
                get |= strcmp(r->method, "GET") == 0;
                post |= strcmp(r->method, "POST") == 0;
                if (!m.route || (method_is(r, method) && !method_is(m.route, method))) {
                        m = c;
                        m.route = r;
                        m.id = r->id;
                }
        }
        m.allow = get && post ? "GET, HEAD, POST" : get ? "GET, HEAD" : post ? "POST" : NULL;
        if (!m.route) {
                /* Under /v2 an unknown path is v2's (its errors are v2's); on the
                 * admin listener every other path is simply not served. */
                bool v2 = strncmp(path, "/v2", 3) == 0 && (path[3] == '\0' || path[3] == '/');
                m.id = v2 && !(listener & ROUTES_ON_ADMIN) ? HTTP_ROUTE_V2_OTHER : HTTP_ROUTE_OTHER;
        }
        *ret_match = m;
        if (!m.route)
                return -ENOENT;
        return method_is(m.route, method) ? 0 : -EOPNOTSUPP;
}

int routes_version(const struct routes_match *m, int64_t *ret_version)
{
        int64_t v = 0;

        if (!m->version) {
                *ret_version = 0;
                return 0;
        }
        if (m->version_len == 0 || m->version_len > 18 || m->version[0] == '0')
                return -EINVAL;
        for (size_t i = 0; i < m->version_len; i++) {
                if (m->version[i] < '0' || m->version[i] > '9')
                        return -EINVAL;
                v = v * 10 + (m->version[i] - '0');
        }
        *ret_version = v;
        return 0;
}

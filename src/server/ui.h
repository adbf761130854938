/* ui: the try-it page effnetd serves at GET / (HTML, script and style built
 * into the binary from src/server/ui/, no external resource). The page is a
 * client of the public API like any other: it reads GET /v1/models and
 * sends each image to POST /v1/classify.
 *
 * Usage (the http module):
 *   struct ui_asset a;
 *   if (ui_find(path, &a) == 0)      // "/", "/ui/app.js", "/ui/app.css"
 *           answer 200 with a.body (a.len bytes), Content-Type a.content_type,
 *           Content-Security-Policy UI_CSP and UI_CACHE_CONTROL;
 *
 * Immutable data: thread-safe.
 */
#ifndef EFFNET_SERVER_UI_H
#define EFFNET_SERVER_UI_H

#include <stddef.h>

/* The page loads its own script and style and nothing else: no inline
 * script or style, no other origin, no framing, no forms. Images are shown
 * from blob: URLs of the files picked; fetch() goes to this server only. */
#define UI_CSP                                                                                          \
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "         \
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
/* The page changes with the binary, and its paths carry no version:
 * browsers check again on every load. */
#define UI_CACHE_CONTROL "no-cache"

struct ui_asset {
        const char *path;          /* "/", "/ui/app.js", "/ui/app.css" */
        const char *content_type;
        const char *body;          /* static, NUL-terminated */
        size_t len;
};

/* The asset at path (exact match) into *ret_asset; -ENOENT for none. */
int ui_find(const char *path, struct ui_asset *ret_asset);

#endif

/* ui: the try-it page's files, built in. */
#include "ui.h"
#include "util.h"

#include <errno.h>
#include <string.h>

/* Generated from src/server/ui/ by embed_text.py. */
extern const char ui_index_html[], ui_app_js[], ui_app_css[];
extern const size_t ui_index_html_len, ui_app_js_len, ui_app_css_len;

int ui_find(const char *path, struct ui_asset *ret_asset)
{
        const struct ui_asset assets[] = {
                { "/", "text/html; charset=utf-8", ui_index_html, ui_index_html_len },
                { "/ui/app.js", "text/javascript; charset=utf-8", ui_app_js, ui_app_js_len },
                { "/ui/app.css", "text/css; charset=utf-8", ui_app_css, ui_app_css_len },
        };

        for (size_t i = 0; i < ARRAY_SIZE(assets); i++)
                if (strcmp(path, assets[i].path) == 0) {
                        *ret_asset = assets[i];
                        return 0;
                }
        return -ENOENT;
}

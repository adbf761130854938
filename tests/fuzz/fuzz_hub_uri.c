/* Fuzz target for the hf:// name parser (src/hub/hub.c): the input is a
 * weights setting. Any input must parse or fail with -EINVAL and a message;
 * a parsed name must be safe to join to the cache directory (no empty, "."
 * or ".." parts, no "--" in the repository id) and format back. */
#include "hub.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_path(const char *p)
{
        if (!*p || p[0] == '/' || strstr(p, "//") || p[strlen(p) - 1] == '/')
                abort();
        for (const char *part = p; part; part = strchr(part, '/') ? strchr(part, '/') + 1 : NULL)
                if (part[0] == '.')
                        abort();
        for (const char *c = p; *c; c++)
                if (*c <= ' ' || *c > '~' || *c == '\\')
                        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char s[4096], err[512], out[4096];
        struct hub_ref ref;

        if (size >= sizeof s)
                return 0;
        memcpy(s, data, size);
        s[size] = '\0';
        memset(err, 'x', sizeof err);
        int r = hub_parse_uri(s, err, sizeof err, &ref);
        if (r < 0) {
                if (r != -EINVAL || !memchr(err, '\0', sizeof err) || !err[0])
                        abort();
                return 0;
        }
        if (strstr(ref.repo, "--") || strstr(ref.repo, "..") || strlen(ref.repo) > HUB_REPO_MAX)
                abort();
        check_path(ref.revision);
        check_path(ref.file);
        hub_ref_format(&ref, out, sizeof out);
        if (strncmp(out, HUB_URI_PREFIX, strlen(HUB_URI_PREFIX)) != 0)
                abort();
        return 0;
}

/* weights: a weights setting as a local file, its config.json and digest. */
#include "weights.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int weights_fetch_config(const struct hub_ref *weights_ref, const char *commit, const struct hub_opts *opts,
                         char *err, size_t err_len, char **ret_path)
{
        struct hub_ref ref;
        struct hub_file *f = NULL;
        char file[HUB_FILE_MAX + 1];
        const char *slash = strrchr(weights_ref->file, '/');
        int r;

        /* config.json next to the weights' file (timm puts both at the top). */
        snprintf(file, sizeof file, "%.*sconfig.json", slash ? (int)(slash - weights_ref->file + 1) : 0,
                 weights_ref->file);
        if (strcmp(file, weights_ref->file) == 0)
                return err_set(err, err_len, -ENOENT, "the weights are the config");
        if ((r = hub_ref_init(weights_ref->repo, commit, file, err, err_len, &ref)) < 0 ||
            (r = hub_fetch(&ref, opts, err, err_len, &f)) < 0)
                return r;
        *ret_path = f->path;
        f->path = NULL;
        hub_file_free(f);
        return 0;
}

int weights_resolve(const char *weights, const struct hub_opts *opts, char *err, size_t err_len,
                    struct weights_file *ret)
{
        struct hub_file *f = NULL;
        char why[1024];
        int r;

        *ret = (struct weights_file){ 0 };
        if (!hub_is_uri(weights)) {
                ret->path = strdup(weights);
                return ret->path ? 0 : err_set(err, err_len, -ENOMEM, "out of memory");
        }
        if ((r = hub_parse_uri(weights, why, sizeof why, &ret->ref)) < 0 ||
            (r = hub_fetch(&ret->ref, opts, why, sizeof why, &f)) < 0)
                return err_set(err, err_len, r, "weights %s: %s", weights, why);
        ret->hub = f;
        if (!(ret->path = strdup(f->path)))
                return err_set(err, err_len, -ENOMEM, "out of memory");
        struct hub_opts co = *opts;
        co.offline = opts->offline || !f->network;
        co.progress = NULL;   /* a small file: no progress of its own */
        if (weights_fetch_config(&ret->ref, f->commit, &co, why, sizeof why, &ret->config) < 0)
                ret->config = NULL;   /* none: labels come from elsewhere */
        return 0;
}

void weights_file_clear(struct weights_file *wf)
{
        free(wf->path);
        hub_file_free(wf->hub);
        free(wf->config);
        *wf = (struct weights_file){ 0 };
}

int weights_sha256_hex(const void *data, size_t n, char ret_hex[65])
{
        return hub_digest_hex(HUB_SHA256, NULL, 0, data ? data : "", n, NULL, ret_hex);
}

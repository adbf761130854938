/* weights: what a weights setting names, as a local file: a path, or
 * hf://ORG/NAME[@REVISION][/FILE] resolved through the Hub's cache
 * (downloaded when missing), with the repository's config.json (class
 * names) at the weights' commit, and the SHA-256 of the bytes served. The
 * one place effnetd and the effnet tool resolve weights.
 *
 *   struct weights_file wf = { 0 };
 *   struct hub_opts ho = { .deadline_s = 600, .progress = on_progress, .userdata = ui };
 *   r = weights_resolve("hf://timm/tf_efficientnetv2_b0.in1k", &ho, err, sizeof err, &wf);
 *   ... effnet_model_open(wf.path, ...); labels from wf.config (may be NULL) ...
 *   weights_file_clear(&wf);
 *
 * Thread-safe: no shared state (the hub's cache is shared on disk, as the
 * hub says).
 */
#ifndef EFFNET_HUB_WEIGHTS_H
#define EFFNET_HUB_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"

struct weights_file {
        char *path;                /* the local file, owned */
        struct hub_file *hub;      /* hf:// weights: the cached file; NULL otherwise */
        struct hub_ref ref;        /* hf:// weights: what was asked for */
        char *config;              /* hf:// weights: the repository's config.json in the cache, or NULL */
};

/* Resolves weights into ret (zeroed first; the caller clears it, also on
 * failure). For hf:// weights: the file through the cache with opts
 * (downloaded when missing), then its config.json at the same commit, from
 * the cache only when the weights needed no network (a start that needed
 * none needs none for this either). Errors: hub_parse_uri's and
 * hub_fetch's with the message in err, -ENOMEM. */
int weights_resolve(const char *weights, const struct hub_opts *opts, char *err, size_t err_len,
                    struct weights_file *ret);

/* The repository's config.json beside the weights' file (timm writes
 * label_names there) at commit, into the cache (offline: from the cache
 * only). *ret_path is the caller's. -ENOENT when the repository has none
 * (or the weights are config.json), hub_fetch's errors otherwise. */
int weights_fetch_config(const struct hub_ref *weights_ref, const char *commit, const struct hub_opts *opts,
                         char *err, size_t err_len, char **ret_path);

/* Frees what wf holds and zeroes it. Accepts a zeroed one. */
void weights_file_clear(struct weights_file *wf);

/* The SHA-256 of n bytes as 64 hex digits (and a NUL): hub_digest_hex. -ENOMEM. */
int weights_sha256_hex(const void *data, size_t n, char ret_hex[65]);

#endif

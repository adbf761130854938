/* hub: files of Hugging Face Hub model repositories, fetched over HTTP(S)
 * into the cache layout that huggingface_hub uses, so that each finds the
 * other's downloads:
 *
 *   CACHE/models--ORG--NAME/blobs/ETAG                  the content
 *   CACHE/models--ORG--NAME/snapshots/COMMIT/FILE       -> ../../blobs/ETAG
 *   CACHE/models--ORG--NAME/refs/REVISION               COMMIT
 *
 * Only hub.c includes curl/curl.h. */
#ifndef EFFNET_HUB_H
#define EFFNET_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HUB_URI_PREFIX "hf://"
#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"
#define HUB_DEFAULT_REVISION "main"
#define HUB_DEFAULT_FILE "model.safetensors"
/* The largest file a fetch accepts: V2-XL in float32 with a 21k-class head
 * is about 0.9 GB, so this leaves room without trusting a server's size. */
#define HUB_MAX_BYTES_DEFAULT ((int64_t)8 << 30)
/* Seconds to connect, for the metadata request, and without a byte while
 * downloading: huggingface_hub's defaults (HF_HUB_ETAG_TIMEOUT and
 * HF_HUB_DOWNLOAD_TIMEOUT override them there and here). A stall resumes
 * the transfer; it does not end the fetch. */
#define HUB_TIMEOUT_DEFAULT_S 10
/* Seconds one fetch of one file may take in all (the metadata, waiting for
 * another download's lock, every attempt and pause of the transfer): a
 * server that trickles a byte now and then never stalls, so without this a
 * start or a reload could wait on it for ever. 30 minutes is 0.9 GB (V2-XL)
 * at 0.5 MB/s. */
#define HUB_DEADLINE_DEFAULT_S 1800
/* Interrupted downloads are resumed (Range) this many times in one fetch. */
#define HUB_RETRIES 5
/* Redirects followed for one request. */
#define HUB_MAX_REDIRECTS 5
/* Seconds to wait for another process (ours or huggingface_hub) that is
 * downloading the same blob and holds its lock. */
#define HUB_LOCK_WAIT_S 900

#define HUB_REPO_MAX 96      /* the hub's limit on repository ids */
#define HUB_REVISION_MAX 255
#define HUB_FILE_MAX 1023

/* One file of one revision of a model repository. */
struct hub_ref {
        char repo[HUB_REPO_MAX + 1];          /* "ORG/NAME" (or "NAME") */
        char revision[HUB_REVISION_MAX + 1];  /* branch, tag or commit */
        char file[HUB_FILE_MAX + 1];          /* path inside the repository */
};

/* Whether s names a hub file ("hf://..."). NULL-safe. */
bool hub_is_uri(const char *s);

/* A ref from its parts, checked as the hub checks repository ids (ORG/NAME
 * of letters, digits, '-', '_', '.'; no "--" or ".."), with revision and
 * file safe as paths inside the cache. NULL revision or file: the defaults.
 * -EINVAL with a message in err. */
int hub_ref_init(const char *repo, const char *revision, const char *file, char *err, size_t err_len,
                 struct hub_ref *ret_ref);

/* Parses "hf://ORG/NAME[@REVISION][/FILE]", huggingface_hub's HfFileSystem
 * path syntax: a revision holding '/' is percent-encoded ("@refs%2Fpr%2F1"),
 * FILE defaults to model.safetensors. -EINVAL with a message in err. */
int hub_parse_uri(const char *uri, char *err, size_t err_len, struct hub_ref *ret_ref);

/* Formats ref back as an hf:// URI (for logs). */
void hub_ref_format(const struct hub_ref *ref, char *buf, size_t len);

/* What a download reports to its caller. */
struct hub_progress {
        const char *url;       /* where the bytes come from (after the hub's redirect),
                                * without the query (a CDN's holds a signature) */
        const char *blob;      /* the blob path being written */
        int64_t done;          /* bytes of the file on disk, resumed ones included */
        int64_t total;         /* the file's size */
        int64_t resumed;       /* bytes that were already on disk at the start */
        int64_t deadline_ns;   /* time_now_ns() at which the fetch gives up (its deadline) */
        bool started;          /* first call of a download */
        bool finished;         /* last call: the file is complete (not yet verified) */
};

struct hub_opts {
        /* NULL: each is resolved as huggingface_hub resolves it (see
         * hub_settings). */
        const char *endpoint;
        const char *cache_dir;
        const char *token;
        bool offline;          /* never use the network (also HF_HUB_OFFLINE=1) */
        bool refresh;          /* ask the hub even when the revision is cached (a
                                * branch may have moved); offline wins */
        int64_t max_bytes;     /* 0: HUB_MAX_BYTES_DEFAULT */
        int64_t deadline_s;    /* the fetch's deadline; 0: HUB_DEADLINE_DEFAULT_S */
        const char *deadline_name;  /* how the caller's user sets deadline_s (a setting, a
                                     * flag), named in the error when it passes; or NULL */
        /* Called on the calling thread at the start of a download, at most
         * ten times a second while bytes arrive, and at the end. Never
         * called when the file is found in the cache. */
        void (*progress)(void *userdata, const struct hub_progress *p);
        void *userdata;
};

/* The settings a fetch would use, resolved from opts and the environment
 * as huggingface_hub does (a variable set to "" counts as unset):
 *   endpoint: HF_ENDPOINT (trailing '/' removed), else https://huggingface.co;
 *   cache:    HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub,
 *             where HF_HOME defaults to $XDG_CACHE_HOME/huggingface, else
 *             ~/.cache/huggingface ('~' and $VARS expanded);
 *   token:    HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the file
 *             HF_TOKEN_PATH (default HF_HOME/token), whitespace trimmed;
 *   offline:  HF_HUB_OFFLINE (1, ON, YES, TRUE);
 *   CA bundle: REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE (as requests reads
 *             them): the certificates that HTTPS trusts instead of the
 *             system's (a proxy's own CA);
 *   timeouts: HF_HUB_ETAG_TIMEOUT (connecting, the metadata request) and
 *             HF_HUB_DOWNLOAD_TIMEOUT (seconds without a byte of content,
 *             as requests' read timeout), 10 s each.
 * The strings are owned by the result; free them with hub_settings_clear. */
struct hub_settings {
        char *endpoint, *cache_dir, *token;   /* token NULL when none */
        char *ca_bundle;                      /* NULL: the system's */
        bool offline;
        int etag_timeout_s, download_timeout_s;
};
int hub_settings_get(const struct hub_opts *opts, char *err, size_t err_len, struct hub_settings *ret);
void hub_settings_clear(struct hub_settings *s);

/* A file in the cache. */
struct hub_file {
        char *path;            /* CACHE/models--ORG--NAME/snapshots/COMMIT/FILE */
        char commit[41];
        bool downloaded;       /* false: it was in the cache already */
        bool network;          /* whether the hub was asked */
};

/* The local path of ref: from the cache when refs/REVISION (or a commit
 * given as the revision) and its snapshot are there, with no network use;
 * else asks the hub (HEAD on {endpoint}/{repo}/resolve/{revision}/{file},
 * as huggingface_hub does), downloads into blobs/ETAG.incomplete (resuming
 * one that is there with a Range request), checks the size and, when the
 * ETag is a sha256 (every LFS file), the content's sha256, when it is a
 * git blob id (files kept in git, such as config.json), the content's git
 * sha1, and only then moves it to blobs/ETAG and links
 * snapshots/COMMIT/FILE to it. A resumed transfer must answer the Range
 * with a Content-Range that starts where the file on disk ends, else the
 * file starts over; a verification that fails after a resume starts over
 * once too. HTTPS is never redirected to plain HTTP. The files it creates
 * in the cache are opened without following symbolic links, and its
 * temporary files are made new (O_EXCL), so that a cache shared with other
 * users cannot aim its writes elsewhere. Messages never show a URL's query
 * (a CDN's holds a signature) nor its user name and password.
 * Errors, each with a message in err:
 *   -ENOENT     unknown repository, revision or file (404), or offline and
 *               not in the cache;
 *   -EACCES     401/403: a private or gated repository that needs a token;
 *   -EBADMSG    the content's sha256, git sha1 or size differs from the hub's (the
 *               download is discarded: nothing enters snapshots/), or the
 *               answer is not the hub's (no X-Repo-Commit, no ETag);
 *   -E2BIG      larger than max_bytes;  -ENOSPC  not enough disk;
 *   -ENETUNREACH  the endpoint cannot be reached;  -EPROTO  other statuses;
 *   -ETIMEDOUT  the fetch's deadline passed (the message names deadline_name),
 *               or another download of the same blob held the lock too long;
 *   -EPERM      a redirect from https:// to http://.
 * Thread-safe (no shared state besides libcurl's one-time set-up); blocks.
 * On success *ret_file is the caller's, freed with hub_file_free. */
int hub_fetch(const struct hub_ref *ref, const struct hub_opts *opts, char *err, size_t err_len,
              struct hub_file **ret_file);

struct hub_file *hub_file_free(struct hub_file *f);

/* text with every URL's query and fragment replaced by "?[redacted]" and
 * its user name and password removed, into out (cut at out_len): what a
 * message may show of an address. A URL is a scheme followed by "://", up
 * to white space, a quote or '<' '>', or ',' ';' ':' ')' before white space
 * or the end. */
void hub_redact(const char *text, char *out, size_t out_len);

/* The one digest of the module and of the weights it resolves (OpenSSL's
 * EVP): the hash of prefix (prefix_len bytes, may be 0) followed by the n
 * bytes at data or, data NULL, by the content of the file path (read in
 * chunks, not followed if a symbolic link), as lower-case hex in ret_hex
 * (65 bytes for SHA-256, 41 for SHA-1). -ENOMEM, or the file's -errno. */
enum hub_hash { HUB_SHA256, HUB_SHA1 };
int hub_digest_hex(enum hub_hash hash, const void *prefix, size_t prefix_len, const void *data, size_t n,
                   const char *path, char *ret_hex);

#endif

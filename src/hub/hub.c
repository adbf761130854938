/* hub: files of Hugging Face Hub model repositories in huggingface_hub's
 * cache layout (see hub.h). */
#include "hub.h"
#include "util.h"
#include "effnet.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define HASH_CHUNK ((size_t)1 << 20)
#define TOKEN_MAX 4096
#define HEADER_VALUE_MAX 4096
#define PROGRESS_PERIOD_NS ((int64_t)100 * 1000000)

bool hub_is_uri(const char *s)
{
        return s && strncmp(s, HUB_URI_PREFIX, strlen(HUB_URI_PREFIX)) == 0;
}

/* ---- names ------------------------------------------------------------- */

static bool is_word(char c)
{
        return isalnum((unsigned char)c) || c == '_';
}

/* One part of a repository id: [\w.-]+ that starts and ends with \w, as
 * huggingface_hub's validate_repo_id (its \b boundaries) wants. */
static bool repo_part_ok(const char *s, size_t n)
{
        if (n == 0 || !is_word(s[0]) || !is_word(s[n - 1]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_word(s[i]) && s[i] != '-' && s[i] != '.')
                        return false;
        return true;
}

static int check_repo(const char *repo, char *err, size_t err_len)
{
        size_t n = strlen(repo);
        const char *slash = strchr(repo, '/');

        if (n == 0 || n > HUB_REPO_MAX)
                return err_set(err, err_len, -EINVAL, "repository id '%s': 1 to %d characters", repo, HUB_REPO_MAX);
        bool ok = slash ? repo_part_ok(repo, (size_t)(slash - repo)) && repo_part_ok(slash + 1, strlen(slash + 1))
                        : repo_part_ok(repo, n);
        /* "--" separates the parts of cache folder names; ".." and a ".git"
         * suffix are refused by the hub too. */
        if (!ok || strstr(repo, "--") || strstr(repo, "..") || (n >= 4 && strcmp(repo + n - 4, ".git") == 0))
                return err_set(err, err_len, -EINVAL,
                               "repository id '%s': expected ORG/NAME of letters, digits, '-', '_' and '.'", repo);
        return 0;
}

/* A relative path that stays inside the directory it is joined to: '/'
 * separated, no empty, "." or ".." parts, no leading '.', printable ASCII
 * without '\\'. */
static bool rel_path_ok(const char *p, size_t max)
{
        size_t n = strlen(p);
        if (n == 0 || n > max)
                return false;
        for (const char *part = p; part;) {
                const char *slash = strchr(part, '/');
                size_t len = slash ? (size_t)(slash - part) : strlen(part);
                if (len == 0 || part[0] == '.')
                        return false;
                for (size_t i = 0; i < len; i++)
                        if (part[i] <= ' ' || part[i] > '~' || part[i] == '\\')
                                return false;
                part = slash ? slash + 1 : NULL;
        }
        return true;
}

int hub_ref_init(const char *repo, const char *revision, const char *file, char *err, size_t err_len,
                 struct hub_ref *ret_ref)
{
        struct hub_ref ref;
        int r;

        revision = revision ? revision : HUB_DEFAULT_REVISION;
        file = file ? file : HUB_DEFAULT_FILE;
        if ((r = check_repo(repo, err, err_len)) < 0)
                return r;
        if (!rel_path_ok(revision, HUB_REVISION_MAX))
                return err_set(err, err_len, -EINVAL, "revision '%s': expected a branch, tag or commit", revision);
        if (!rel_path_ok(file, HUB_FILE_MAX))
                return err_set(err, err_len, -EINVAL, "file '%s': expected a path inside the repository", file);
        snprintf(ref.repo, sizeof ref.repo, "%s", repo);
        snprintf(ref.revision, sizeof ref.revision, "%s", revision);
        snprintf(ref.file, sizeof ref.file, "%s", file);
        *ret_ref = ref;
        return 0;
}

int hub_parse_uri(const char *uri, char *err, size_t err_len, struct hub_ref *ret_ref)
{
        char repo[HUB_REPO_MAX + 1], rev[HUB_REVISION_MAX + 1] = HUB_DEFAULT_REVISION;
        const char *p, *org_end, *name_end, *file = NULL;

        if (!hub_is_uri(uri))
                return err_set(err, err_len, -EINVAL, "'%s' does not start with " HUB_URI_PREFIX, uri);
        p = uri + strlen(HUB_URI_PREFIX);
        org_end = strchr(p, '/');
        if (!org_end)
                return err_set(err, err_len, -EINVAL, "'%s': expected hf://ORG/NAME[@REVISION][/FILE]", uri);
        if (strncmp(p, "datasets/", 9) == 0 || strncmp(p, "spaces/", 7) == 0)
                return err_set(err, err_len, -EINVAL, "'%s': only model repositories hold weights", uri);
        name_end = org_end + 1 + strcspn(org_end + 1, "@/");
        if ((size_t)(name_end - p) > HUB_REPO_MAX)
                return err_set(err, err_len, -EINVAL, "'%s': repository id longer than %d characters", uri,
                               HUB_REPO_MAX);
        memcpy(repo, p, (size_t)(name_end - p));
        repo[name_end - p] = '\0';
        p = name_end;
        if (*p == '@') {
                /* Percent-decoded, as HfFileSystem writes revisions with '/'. */
                size_t n = 0;
                for (p++; *p && *p != '/'; p++) {
                        int c = (unsigned char)*p;
                        if (c == '%') {
                                int hi = hex_value(p[1]), lo = hi < 0 ? -1 : hex_value(p[2]);
                                if (lo < 0)
                                        return err_set(err, err_len, -EINVAL, "'%s': bad %%-escape in the revision",
                                                       uri);
                                c = hi * 16 + lo;
                                p += 2;
                        }
                        if (n + 1 >= sizeof rev)
                                return err_set(err, err_len, -EINVAL, "'%s': revision too long", uri);
                        rev[n++] = (char)c;
                }
                rev[n] = '\0';
                if (n == 0)
                        return err_set(err, err_len, -EINVAL, "'%s': empty revision after '@'", uri);
        }
        if (*p == '/') {
                file = p + 1;
                if (!*file)
                        return err_set(err, err_len, -EINVAL, "'%s': empty file name after '/'", uri);
        }
        return hub_ref_init(repo, rev, file, err, err_len, ret_ref);
}

void hub_ref_format(const struct hub_ref *ref, char *buf, size_t len)
{
        snprintf(buf, len, HUB_URI_PREFIX "%s@%s/%s", ref->repo, ref->revision, ref->file);
}

/* ---- addresses in messages --------------------------------------------- */

/* A bounded writer into a caller's buffer: what does not fit is cut. */
struct sink {
        char *buf;
        size_t len, used;
};

static void sink_put(struct sink *s, const char *data, size_t n)
{
        if (s->used + 1 >= s->len)
                return;
        if (n > s->len - 1 - s->used)
                n = s->len - 1 - s->used;
        memcpy(s->buf + s->used, data, n);
        s->used += n;
        s->buf[s->used] = '\0';
}

/* Whether p is past the end of a URL inside a message. URLs hold no white
 * space; a ':' or ',' before white space is the message's. */
static bool url_end(const char *p)
{
        unsigned char c = (unsigned char)*p;

        if (c == '\0' || isspace(c) || c == '"' || c == '\'' || c == '<' || c == '>')
                return true;
        return (c == ',' || c == ';' || c == ':' || c == ')') && (p[1] == '\0' || isspace((unsigned char)p[1]));
}

/* The one place where an address becomes shown text: url (its authority
 * after sep + 3 when sep is not NULL) without user name, password, query
 * and fragment (a CDN's query is a signature that grants access). Returns
 * where the URL ends in its text. */
static const char *redact_url(struct sink *s, const char *url, const char *sep)
{
        const char *auth = sep ? sep + 3 : url, *end = auth, *host = auth, *q;

        while (!url_end(end))
                end++;
        for (const char *c = auth; c < end && *c != '/' && *c != '?' && *c != '#'; c++)
                if (*c == '@')
                        host = c + 1;
        sink_put(s, url, (size_t)(auth - url));
        for (q = host; q < end && *q != '?' && *q != '#'; q++)
                ;
        sink_put(s, host, (size_t)(q - host));
        if (q < end)
                sink_put(s, "?[redacted]", strlen("?[redacted]"));
        return end;
}

void hub_redact(const char *text, char *out, size_t out_len)
{
        struct sink s = { .buf = out, .len = out_len };
        const char *p = text;

        if (out_len == 0)
                return;
        out[0] = '\0';
        while (*p) {
                const char *sep = strstr(p, "://"), *start = sep;
                if (!sep) {
                        sink_put(&s, p, strlen(p));
                        break;
                }
                while (start > p && (isalnum((unsigned char)start[-1]) || start[-1] == '+' || start[-1] == '-' ||
                                     start[-1] == '.'))
                        start--;
                sink_put(&s, p, (size_t)(start - p));
                p = redact_url(&s, start, sep);
        }
}

/* A message with its addresses redacted in place: the last filter of every
 * error, whatever a server or libcurl put in it. */
static void redact_message(char *msg, size_t len)
{
        char *copy = msg && len > 0 ? strndup(msg, len - 1) : NULL;

        if (copy)
                hub_redact(copy, msg, len);
        else if (msg && len > 0)
                msg[0] = '\0';   /* unchecked text is not shown */
        free(copy);
}

/* url as a message may show it (redact_url), in a new string; NULL when out
 * of memory. */
static char *url_shown(const char *url)
{
        size_t len = strlen(url) + sizeof "?[redacted]";
        char *out = malloc(len);

        if (out) {
                struct sink s = { .buf = out, .len = len };
                out[0] = '\0';
                redact_url(&s, url, strstr(url, "://"));
        }
        return out;
}

/* ---- settings ---------------------------------------------------------- */

static const char *env_nonempty(const char *name)
{
        const char *v = getenv(name);
        return v && *v ? v : NULL;
}

static bool env_true(const char *name)
{
        static const char *const yes[] = { "1", "ON", "YES", "TRUE" };
        const char *v = getenv(name);
        for (size_t i = 0; v && i < ARRAY_SIZE(yes); i++)
                if (strcasecmp(v, yes[i]) == 0)
                        return true;
        return false;
}

static int env_seconds(const char *name, int def)
{
        const char *v = env_nonempty(name);
        int64_t x;
        return v && parse_int(name, v, 1, 86400, NULL, 0, &x) == 0 ? (int)x : def;
}

/* Python's os.path.expandvars(os.path.expanduser(s)): a leading "~" is the
 * home directory ($HOME, else the password database); $NAME and ${NAME} are
 * replaced when set and left as they are otherwise. */
static char *expand_path(const char *s)
{
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);

        if (!f)
                return NULL;
        if (s[0] == '~' && (s[1] == '/' || s[1] == '\0')) {
                const char *home = getenv("HOME");
                struct passwd pw, *pwp = NULL;
                char buf[4096];
                if (!home && getpwuid_r(getuid(), &pw, buf, sizeof buf, &pwp) == 0 && pwp)
                        home = pwp->pw_dir;
                if (home) {
                        size_t n = strlen(home);
                        while (n > 1 && home[n - 1] == '/')
                                n--;
                        fwrite(home, 1, n, f);
                        s++;
                }
        }
        while (*s) {
                if (*s == '$') {
                        bool brace = s[1] == '{';
                        const char *name = s + 1 + brace, *e = name;
                        while (is_word(*e))
                                e++;
                        if (e > name && (!brace || *e == '}')) {
                                char var[256];
                                size_t n = (size_t)(e - name) < sizeof var ? (size_t)(e - name) : sizeof var - 1;
                                memcpy(var, name, n);
                                var[n] = '\0';
                                const char *v = getenv(var);
                                if (v) {
                                        fputs(v, f);
                                        s = e + brace;
                                        continue;
                                }
                        }
                }
                fputc(*s++, f);
        }
        if (fclose(f) != 0) {
                free(out);
                return NULL;
        }
        return out;
}

static char *strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *strdup_printf(const char *fmt, ...)
{
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        int n = vasprintf(&s, fmt, ap);
        va_end(ap);
        return n < 0 ? NULL : s;
}

/* A token with surrounding whitespace trimmed; NULL when empty. -EINVAL if
 * it holds what an HTTP header cannot carry. */
static int clean_token(const char *t, char *err, size_t err_len, const char *from, char **ret)
{
        while (*t && isspace((unsigned char)*t))
                t++;
        size_t n = strlen(t);
        while (n > 0 && isspace((unsigned char)t[n - 1]))
                n--;
        if (n == 0) {
                *ret = NULL;
                return 0;
        }
        if (n > TOKEN_MAX)
                return err_set(err, err_len, -EINVAL, "token from %s is longer than %d characters", from, TOKEN_MAX);
        for (size_t i = 0; i < n; i++)
                if (t[i] <= ' ' || t[i] > '~')
                        return err_set(err, err_len, -EINVAL, "token from %s holds spaces or control characters",
                                       from);
        char *s = strndup(t, n);
        if (!s)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        *ret = s;
        return 0;
}

static int token_from_file(const char *path, char *err, size_t err_len, char **ret)
{
        char buf[TOKEN_MAX + 2];
        FILE *f = fopen(path, "re");

        *ret = NULL;
        if (!f)
                return 0;   /* no token stored: huggingface_hub goes on without one */
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        return clean_token(buf, err, err_len, path, ret);
}

void hub_settings_clear(struct hub_settings *s)
{
        if (!s)
                return;
        free(s->endpoint);
        free(s->cache_dir);
        free(s->token);
        free(s->ca_bundle);
        *s = (struct hub_settings){ 0 };
}

/* The hub's address without trailing slashes, or NULL. */
static char *settings_endpoint(const struct hub_opts *opts)
{
        const char *v = opts && opts->endpoint ? opts->endpoint : env_nonempty("HF_ENDPOINT");
        char *endpoint = strdup(v ? v : HUB_DEFAULT_ENDPOINT);

        if (endpoint) {
                size_t n = strlen(endpoint);
                while (n > 0 && endpoint[n - 1] == '/')
                        endpoint[--n] = '\0';
        }
        return endpoint;
}

/* huggingface_hub's HF_HOME, or NULL. */
static char *settings_home(void)
{
        const char *v;

        if ((v = env_nonempty("HF_HOME")))
                return expand_path(v);
        if ((v = env_nonempty("XDG_CACHE_HOME"))) {
                char *joined = strdup_printf("%s/huggingface", v);
                char *home = joined ? expand_path(joined) : NULL;
                free(joined);
                return home;
        }
        return expand_path("~/.cache/huggingface");
}

/* The hub cache's folder, or NULL. */
static char *settings_cache_dir(const struct hub_opts *opts, const char *home)
{
        const char *v;

        if (opts && opts->cache_dir)
                return strdup(opts->cache_dir);
        if ((v = env_nonempty("HF_HUB_CACHE")) || (v = env_nonempty("HUGGINGFACE_HUB_CACHE")))
                return expand_path(v);
        return strdup_printf("%s/hub", home);
}

/* The first source that holds a token wins; a blank one counts as none, as
 * in huggingface_hub's get_token. *ret_token stays NULL when none has one. */
static int settings_token(const struct hub_opts *opts, const char *home, char *err, size_t err_len,
                          char **ret_token)
{
        char *token = NULL;
        const char *v;
        int r = 0;

        if (opts && opts->token)
                r = clean_token(opts->token, err, err_len, "the caller", &token);
        if (r == 0 && !token && (v = env_nonempty("HF_TOKEN")))
                r = clean_token(v, err, err_len, "HF_TOKEN", &token);
        if (r == 0 && !token && (v = env_nonempty("HUGGING_FACE_HUB_TOKEN")))
                r = clean_token(v, err, err_len, "HUGGING_FACE_HUB_TOKEN", &token);
        if (r == 0 && !token) {
                char *path = (v = env_nonempty("HF_TOKEN_PATH")) ? expand_path(v) : strdup_printf("%s/token", home);
                r = path ? token_from_file(path, err, err_len, &token)
                         : err_set(err, err_len, -ENOMEM, "out of memory");
                free(path);
        }
        if (r < 0) {
                free(token);
                return r;
        }
        *ret_token = token;
        return 0;
}

int hub_settings_get(const struct hub_opts *opts, char *err, size_t err_len, struct hub_settings *ret)
{
        struct hub_settings s = { 0 };
        char *home = settings_home();
        int r = 0;

        s.endpoint = settings_endpoint(opts);
        if (!s.endpoint || !home || !(s.cache_dir = settings_cache_dir(opts, home))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto fail;
        }
        if ((r = settings_token(opts, home, err, err_len, &s.token)) < 0)
                goto fail;
        s.offline = (opts && opts->offline) || env_true("HF_HUB_OFFLINE") || env_true("TRANSFORMERS_OFFLINE");
        s.etag_timeout_s = env_seconds("HF_HUB_ETAG_TIMEOUT", HUB_TIMEOUT_DEFAULT_S);
        s.download_timeout_s = env_seconds("HF_HUB_DOWNLOAD_TIMEOUT", HUB_TIMEOUT_DEFAULT_S);
        /* requests' order (huggingface_hub sends through it). */
        const char *ca = env_nonempty("REQUESTS_CA_BUNDLE");
        if (!ca)
                ca = env_nonempty("CURL_CA_BUNDLE");
        if (ca && !(s.ca_bundle = expand_path(ca))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto fail;
        }
        free(home);
        *ret = s;
        return 0;
fail:
        free(home);
        hub_settings_clear(&s);
        return r;
}

/* ---- files ------------------------------------------------------------- */

struct hub_file *hub_file_free(struct hub_file *f)
{
        if (f) {
                free(f->path);
                free(f);
        }
        return NULL;
}

/* mkdir -p of the directory that holds path. */
static int mkdir_parents(const char *path)
{
        char *p = strdup(path);
        int r = 0;

        if (!p)
                return -ENOMEM;
        char *last = strrchr(p, '/');
        if (last && last != p) {
                *last = '\0';
                for (char *s = p + 1; r == 0; s++) {
                        if (*s == '/' || *s == '\0') {
                                char c = *s;
                                *s = '\0';
                                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                                        r = -errno;
                                *s = c;
                                if (c == '\0')
                                        break;
                        }
                }
        }
        free(p);
        return r;
}

static bool is_hex(const char *s, size_t n)
{
        if (strlen(s) != n)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
                        return false;
        return true;
}

/* Whether path is (or links to) a regular file. */
static bool file_exists(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Writes text to path through a temporary file and rename(), so that a
 * reader never sees half of it. The temporary file is made new under a
 * name nobody can guess (mkostemp: O_EXCL), so a link planted in a shared
 * cache is never written through. */
static int write_atomic(const char *path, const char *text)
{
        char *tmp = strdup_printf("%s.tmpXXXXXX", path);
        int fd, r = 0;

        if (!tmp)
                return -ENOMEM;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                goto out;
        }
        size_t n = strlen(text);
        if (fchmod(fd, 0644) < 0)
                r = -errno;
        else if (write(fd, text, n) != (ssize_t)n)
                r = -EIO;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                unlink(tmp);
out:
        free(tmp);
        return r;
}

/* refs/REVISION holds the commit (no newline, as huggingface_hub writes it);
 * written only when it changes, so a read-only cache that is up to date
 * still works. */
static int write_ref(const char *storage, const struct hub_ref *ref, const char *commit)
{
        char buf[64];
        int r = 0;

        if (strcmp(ref->revision, commit) == 0)
                return 0;
        char *path = strdup_printf("%s/refs/%s", storage, ref->revision);
        if (!path)
                return -ENOMEM;
        FILE *f = fopen(path, "re");
        if (f) {
                size_t n = fread(buf, 1, sizeof buf - 1, f);
                fclose(f);
                buf[n] = '\0';
                if (strcmp(buf, commit) == 0)
                        goto out;
        }
        if ((r = mkdir_parents(path)) == 0)
                r = write_atomic(path, commit);
out:
        free(path);
        return r;
}

/* The commit that refs/REVISION names, or the revision itself when it is a
 * commit. -ENOENT when unknown. */
static int read_ref(const char *storage, const struct hub_ref *ref, char ret_commit[41])
{
        char buf[64];

        if (is_hex(ref->revision, 40)) {
                memcpy(ret_commit, ref->revision, 41);
                return 0;
        }
        char *path = strdup_printf("%s/refs/%s", storage, ref->revision);
        if (!path)
                return -ENOMEM;
        FILE *f = fopen(path, "re");
        free(path);
        if (!f)
                return -ENOENT;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        while (n > 0 && isspace((unsigned char)buf[n - 1]))
                buf[--n] = '\0';
        if (!is_hex(buf, 40))
                return -ENOENT;
        memcpy(ret_commit, buf, 41);
        return 0;
}

/* snapshots/COMMIT/FILE -> ../../blobs/ETAG (one more "../" per directory
 * in FILE), relative so that the cache can move; made under a temporary
 * name and renamed over any old link. */
static int link_snapshot(const char *pointer, const char *file, const char *etag)
{
        char *target = NULL, *tmp = NULL;
        size_t depth = 2, len = 0;
        int r;

        for (const char *c = file; *c; c++)
                depth += *c == '/';
        FILE *f = open_memstream(&target, &len);
        if (!f)
                return -ENOMEM;
        for (size_t i = 0; i < depth; i++)
                fputs("../", f);
        fprintf(f, "blobs/%s", etag);
        if (fclose(f) != 0) {
                free(target);
                return -ENOMEM;
        }
        if ((r = mkdir_parents(pointer)) < 0)
                goto out;
        if (!(tmp = strdup_printf("%s.tmp.%ld", pointer, (long)getpid()))) {
                r = -ENOMEM;
                goto out;
        }
        unlink(tmp);
        if (symlink(target, tmp) < 0 || rename(tmp, pointer) < 0) {
                r = -errno;
                unlink(tmp);
        }
out:
        free(tmp);
        free(target);
        return r;
}

int hub_digest_hex(enum hub_hash hash, const void *prefix, size_t prefix_len, const void *data, size_t n,
                   const char *path, char *ret_hex)
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        EVP_MD_CTX *ctx = NULL;
        uint8_t *buf = NULL;
        ssize_t got = 0;
        int r = 0, fd = -1;

        if (!data && (fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
                return -errno;
        ctx = EVP_MD_CTX_new();
        if (!ctx || (!data && !(buf = malloc(HASH_CHUNK))) ||
            EVP_DigestInit_ex(ctx, hash == HUB_SHA1 ? EVP_sha1() : EVP_sha256(), NULL) != 1 ||
            EVP_DigestUpdate(ctx, prefix, prefix_len) != 1 || (data && EVP_DigestUpdate(ctx, data, n) != 1)) {
                r = -ENOMEM;
                goto out;
        }
        while (!data && (got = read(fd, buf, HASH_CHUNK)) > 0)
                EVP_DigestUpdate(ctx, buf, (size_t)got);
        if (got < 0) {
                r = -errno;
                goto out;
        }
        if (EVP_DigestFinal_ex(ctx, md, &md_len) != 1) {
                r = -ENOMEM;
                goto out;
        }
        for (unsigned i = 0; i < md_len; i++)
                snprintf(ret_hex + 2 * i, 3, "%02x", md[i]);
out:
        EVP_MD_CTX_free(ctx);
        free(buf);
        if (fd >= 0)
                close(fd);
        return r;
}

/* ---- HTTP -------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

/* libcurl's global set-up is not safe to run twice at once; it lasts for
 * the process (there is no matching cleanup: other threads may be using it). */
static void curl_init_once(void)
{
        curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* What the headers of the last response of a request said. */
struct answer {
        long status;
        char commit[HEADER_VALUE_MAX], etag[HEADER_VALUE_MAX], linked_etag[HEADER_VALUE_MAX];
        char location[HEADER_VALUE_MAX], error_code[128], error_message[512];
        int64_t linked_size, content_length;
        /* Content-Range: bytes FIRST-LAST/TOTAL; -1 when absent (TOTAL
         * also when "*") */
        int64_t range_first, range_last, range_total;
};

static void answer_reset(struct answer *a)
{
        *a = (struct answer){ .linked_size = -1, .content_length = -1, .range_first = -1, .range_last = -1,
                              .range_total = -1 };
}

/* "bytes FIRST-LAST/TOTAL" (TOTAL may be "*") into a; left at -1 when it
 * is anything else. */
static void parse_content_range(struct answer *a, const char *v, size_t n)
{
        char buf[96], *end;
        long long first, last, total = -1;

        if (n >= sizeof buf)
                return;
        memcpy(buf, v, n);
        buf[n] = '\0';
        if (strncasecmp(buf, "bytes ", 6) != 0 || !isdigit((unsigned char)buf[6]))
                return;
        errno = 0;
        first = strtoll(buf + 6, &end, 10);
        if (*end != '-' || !isdigit((unsigned char)end[1]))
                return;
        last = strtoll(end + 1, &end, 10);
        if (*end != '/')
                return;
        if (strcmp(end + 1, "*") != 0) {
                if (!isdigit((unsigned char)end[1]))
                        return;
                total = strtoll(end + 1, &end, 10);
                if (*end != '\0')
                        return;
        }
        if (errno != 0 || last < first)
                return;
        a->range_first = first;
        a->range_last = last;
        a->range_total = total;
}

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
        /* Longer than the field: dropped, which the checks then report as
         * missing rather than using a truncated value. */
        if (n >= cap)
                n = 0;
        memcpy(dst, v, n);
        dst[n] = '\0';
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct answer *a = userdata;
        size_t n = size * nmemb, len = n;
        const char *colon;

        while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
                len--;
        if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
                /* A new response (after a redirect or a 100): start over. */
                answer_reset(a);
                const char *sp = memchr(data, ' ', len);
                if (sp)
                        a->status = strtol(sp + 1, NULL, 10);
                return n;
        }
        colon = memchr(data, ':', len);
        if (!colon)
                return n;
        size_t name_len = (size_t)(colon - data);
        const char *v = colon + 1, *end = data + len;
        while (v < end && (*v == ' ' || *v == '\t'))
                v++;
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
        size_t vlen = (size_t)(end - v);
#define IS(name) (name_len == strlen(name) && strncasecmp(data, name, name_len) == 0)
        if (IS("X-Repo-Commit"))
                copy_value(a->commit, sizeof a->commit, v, vlen);
        else if (IS("ETag"))
                copy_value(a->etag, sizeof a->etag, v, vlen);
        else if (IS("X-Linked-Etag"))
                copy_value(a->linked_etag, sizeof a->linked_etag, v, vlen);
        else if (IS("Location"))
                copy_value(a->location, sizeof a->location, v, vlen);
        else if (IS("X-Error-Code"))
                copy_value(a->error_code, sizeof a->error_code, v, vlen);
        else if (IS("X-Error-Message"))
                copy_value(a->error_message, sizeof a->error_message, v, vlen);
        else if (IS("Content-Range"))
                parse_content_range(a, v, vlen);
        else if (IS("X-Linked-Size") || IS("Content-Length")) {
                char num[32];
                copy_value(num, sizeof num, v, vlen);
                int64_t x;
                if (parse_int("size", num, 0, INT64_MAX, NULL, 0, &x) == 0)
                        *(IS("X-Linked-Size") ? &a->linked_size : &a->content_length) = x;
        }
#undef IS
        return n;
}

/* scheme://host[:port] of url, in buf. */
static void url_origin(const char *url, char *buf, size_t len)
{
        const char *p = strstr(url, "://");
        size_t n = p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);
        snprintf(buf, len, "%.*s", (int)n, url);
}

/* Python's urllib.parse.quote: everything but letters, digits and "_.-~"
 * (and '/' when keep_slash) as %XX. */
static void url_quote(FILE *f, const char *s, bool keep_slash)
{
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (isalnum(c) || c == '_' || c == '.' || c == '-' || c == '~' || (keep_slash && c == '/'))
                        fputc(c, f);
                else
                        fprintf(f, "%%%02X", c);
        }
}

struct fetch {
        const struct hub_ref *ref;
        const struct hub_opts *opts;
        struct hub_settings set;
        CURL *curl;
        char curl_err[CURL_ERROR_SIZE];
        struct answer ans;
        char *storage;                 /* CACHE/models--ORG--NAME */
        char *url;                     /* the resolve URL */
        char *download_url;            /* where the content is (a CDN for LFS files) */
        char *shown_url;               /* download_url as messages show it (url_shown) */
        bool send_token;               /* not to another host than the hub's */
        int64_t size, max_bytes;
        int64_t deadline_ns;           /* time_now_ns() at which the fetch gives up */
        int64_t deadline_s;
        char commit[41], etag[HEADER_VALUE_MAX];
        /* download state */
        int fd;
        int64_t written, resumed, last_progress_ns;
        char *pointer;                 /* CACHE/.../snapshots/COMMIT/FILE */
        char *blob;                    /* CACHE/.../blobs/ETAG */
        char *incomplete;              /* the blob while it downloads */
        int lock_fd;                   /* flock of the blob's download, or -1 */
        int write_error;
        bool body_started;             /* of the current response */
        bool restart;                  /* the answer to a Range was not the rest of the file */
        bool ranged;                   /* a Range request was made in this download */
        bool stalled;                  /* the transfer went HF_HUB_DOWNLOAD_TIMEOUT without a byte */
        int64_t xfer_seen, last_byte_ns;  /* bytes of the transfer so far, and when one last came */
        struct answer get_ans;
};

/* Milliseconds left before the fetch's deadline (<= 0: passed). */
static int64_t left_ms(const struct fetch *F)
{
        return (F->deadline_ns - time_now_ns()) / 1000000;
}

/* The deadline as an error: what the fetch had got, and how to change it. */
static int deadline_error(struct fetch *F, char *err, size_t err_len)
{
        const char *name = F->opts ? F->opts->deadline_name : NULL;

        return err_set(err, err_len, -ETIMEDOUT,
                       "%s/%s at %s: not fetched within its deadline of %lld s%s%s%s (%lld of %lld bytes on disk)",
                       F->ref->repo, F->ref->file, F->ref->revision, (long long)F->deadline_s, name ? " (" : "",
                       name ? name : "", name ? ")" : "", (long long)F->written, (long long)F->size);
}

/* Whether url is https, which may then only be redirected to https. */
static bool is_https(const char *url)
{
        return strncasecmp(url, "https://", 8) == 0;
}

/* Common options of every request: protocols, redirects, timeouts (none
 * past the deadline, which the caller checked is ahead), user agent, CA,
 * the token. */
static int request_setup(struct fetch *F, const char *url, struct curl_slist **ret_headers, struct answer *ans,
                         bool token)
{
        struct curl_slist *h = NULL, *n;
        char *auth = NULL;
        int64_t connect_ms = (int64_t)F->set.etag_timeout_s * 1000, left = left_ms(F);

        curl_easy_reset(F->curl);
        F->curl_err[0] = '\0';
        answer_reset(ans);
        curl_easy_setopt(F->curl, CURLOPT_URL, url);
        curl_easy_setopt(F->curl, CURLOPT_ERRORBUFFER, F->curl_err);
        curl_easy_setopt(F->curl, CURLOPT_PROTOCOLS_STR, "http,https");
        /* A signed address or the content itself must not travel in clear
         * text once the hub is reached over TLS: no https -> http. */
        curl_easy_setopt(F->curl, CURLOPT_REDIR_PROTOCOLS_STR, is_https(url) ? "https" : "http,https");
        curl_easy_setopt(F->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(F->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_ms < left ? connect_ms : left));
        /* No transfer goes past the deadline (0 would mean no limit). */
        curl_easy_setopt(F->curl, CURLOPT_TIMEOUT_MS, (long)(left > 0 ? left : 1));
        if (F->set.ca_bundle)
                curl_easy_setopt(F->curl, CURLOPT_CAINFO, F->set.ca_bundle);
        curl_easy_setopt(F->curl, CURLOPT_USERAGENT, "effnet/" EFFNET_VERSION);
        curl_easy_setopt(F->curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(F->curl, CURLOPT_HEADERDATA, ans);
        /* The size we check is the file's, not a compressed transfer's. */
        n = curl_slist_append(h, "Accept-Encoding: identity");
        if (!n)
                goto oom;
        h = n;
        if (token && F->set.token) {
                if (!(auth = strdup_printf("Authorization: Bearer %s", F->set.token)))
                        goto oom;
                n = curl_slist_append(h, auth);
                free(auth);
                if (!n)
                        goto oom;
                h = n;
        }
        curl_easy_setopt(F->curl, CURLOPT_HTTPHEADER, h);
        *ret_headers = h;
        return 0;
oom:
        curl_slist_free_all(h);
        return -ENOMEM;
}

/* A libcurl failure as our code and message (url as messages show it). */
static int transport_error(struct fetch *F, CURLcode c, const char *url, char *err, size_t err_len)
{
        const char *why = F->curl_err[0] ? F->curl_err : curl_easy_strerror(c);

        /* The timeout of every request ends at the deadline at the latest. */
        if (c == CURLE_OPERATION_TIMEDOUT && left_ms(F) <= 100)
                return deadline_error(F, err, err_len);
        switch (c) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
                return err_set(err, err_len, -ENETUNREACH,
                               "cannot reach the hub at %s (%s); %s/%s at %s is not in the cache %s",
                               F->set.endpoint, why, F->ref->repo, F->ref->file, F->ref->revision, F->set.cache_dir);
        case CURLE_OUT_OF_MEMORY:
                return err_set(err, err_len, -ENOMEM, "out of memory");
        default:
                return err_set(err, err_len, -EPROTO, "%s: %s", url, why);
        }
}

/* An error status of the hub as our code and message, with huggingface_hub's
 * reading of X-Error-Code. */
static int status_error(struct fetch *F, const struct answer *a, char *err, size_t err_len)
{
        const struct hub_ref *ref = F->ref;
        const char *tok = F->set.token ? "the token sent was refused"
                                       : "no token was sent: set HF_TOKEN (or log in with huggingface-cli)";

        if (strcmp(a->error_code, "RevisionNotFound") == 0)
                return err_set(err, err_len, -ENOENT, "revision '%s' not found in %s (404)", ref->revision, ref->repo);
        if (strcmp(a->error_code, "EntryNotFound") == 0)
                return err_set(err, err_len, -ENOENT, "file '%s' not found in %s at revision %s (404)", ref->file,
                               ref->repo, ref->revision);
        if (strcmp(a->error_code, "GatedRepo") == 0 || a->status == 403)
                return err_set(err, err_len, -EACCES,
                               "%s is gated or private (%ld): it needs a token of an account with access; %s%s%s",
                               ref->repo, a->status, tok, a->error_message[0] ? ": " : "", a->error_message);
        if (a->status == 401)
                /* The hub answers 401 both for private repositories and for
                 * ones that do not exist, to an anonymous client. */
                return err_set(err, err_len, -EACCES,
                               "%s not found, or private or gated (401): a token is needed; %s", ref->repo, tok);
        if (a->status == 404)
                return err_set(err, err_len, -ENOENT, "%s: repository or file not found (404): %s/%s at %s",
                               ref->repo, ref->repo, ref->file, ref->revision);
        return err_set(err, err_len, -EPROTO, "the hub at %s answered %ld for %s%s%s", F->set.endpoint, a->status,
                       F->url, a->error_message[0] ? ": " : "", a->error_message);
}

/* One HEAD request of url; F->ans holds the answer. */
static int head_once(struct fetch *F, const char *url, char *err, size_t err_len)
{
        struct curl_slist *h = NULL;
        int64_t left = left_ms(F), etag_ms = (int64_t)F->set.etag_timeout_s * 1000;
        int r;

        if (left <= 0)
                return deadline_error(F, err, err_len);
        if ((r = request_setup(F, url, &h, &F->ans, true)) < 0)
                return err_set(err, err_len, r, "out of memory");
        curl_easy_setopt(F->curl, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(F->curl, CURLOPT_TIMEOUT_MS, (long)(etag_ms < left ? etag_ms : left));
        CURLcode c = curl_easy_perform(F->curl);
        curl_slist_free_all(h);
        if (c != CURLE_OK)
                return transport_error(F, c, url, err, err_len);
        curl_easy_getinfo(F->curl, CURLINFO_RESPONSE_CODE, &F->ans.status);
        return 0;
}

/* A redirect to a path on the same host (a renamed repository). */
static bool is_local_redirect(const struct answer *a)
{
        return a->status >= 300 && a->status < 400 && a->location[0] == '/' && a->location[1] != '/';
}

/* Replaces *url by the address a local redirect names, for hop number hop. */
static int next_hop(struct fetch *F, int hop, char **url, char *err, size_t err_len)
{
        char origin[1024];

        if (hop >= HUB_MAX_REDIRECTS)
                return err_set(err, err_len, -EPROTO, "%s: more than %d redirects", F->url, HUB_MAX_REDIRECTS);
        url_origin(*url, origin, sizeof origin);
        char *next = strdup_printf("%s%s", origin, F->ans.location);
        free(*url);
        *url = next;
        if (!next)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        return 0;
}

/* An absolute redirect from url (a CDN for LFS files) as where to download
 * from; the token goes along only to the same origin. */
static int take_redirect(struct fetch *F, const char *url, char *err, size_t err_len)
{
        const char *loc = F->ans.location;
        char origin[1024], dorigin[1024];

        url_origin(url, origin, sizeof origin);
        if (strncmp(loc, "//", 2) == 0) {
                /* Scheme-relative: the current scheme. */
                const char *colon = strchr(origin, ':');
                F->download_url = strdup_printf("%.*s:%s", colon ? (int)(colon - origin) : 0, origin, loc);
        } else if (strstr(loc, "://")) {
                F->download_url = strdup(loc);
        } else {
                char *shown = url_shown(loc);
                int r = err_set(err, err_len, -EPROTO, "%s: redirect to '%s' not understood", F->url,
                                shown ? shown : "");
                free(shown);
                return r;
        }
        if (!F->download_url)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        if (is_https(url) && !is_https(F->download_url)) {
                char *shown = url_shown(F->download_url);
                int r = err_set(err, err_len, -EPERM, "%s: redirect from https to '%s' refused: only https may follow",
                                F->url, shown ? shown : "");
                free(shown);
                return r;
        }
        /* A signed CDN address needs no token and must not see it. */
        url_origin(F->download_url, dorigin, sizeof dorigin);
        F->send_token = strcmp(origin, dorigin) == 0;
        return 0;
}

/* The last answer of the metadata request, to url: where to download from,
 * or the error it is. */
static int take_answer(struct fetch *F, const char *url, char *err, size_t err_len)
{
        long st = F->ans.status;

        if (st >= 300 && st < 400)
                return take_redirect(F, url, err, err_len);
        if (st < 200 || st >= 300)
                return status_error(F, &F->ans, err, err_len);
        if (!(F->download_url = strdup(url)))
                return err_set(err, err_len, -ENOMEM, "out of memory");
        F->send_token = true;
        return 0;
}

/* huggingface_hub's metadata request: HEAD on the resolve URL, following
 * only redirects within the same host (a renamed repository), and taking an
 * absolute one (a CDN for LFS files) as where to download from. */
static int head(struct fetch *F, char *err, size_t err_len)
{
        char *url = strdup(F->url);
        int r;

        if (!url)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        for (int hop = 0;; hop++) {
                if ((r = head_once(F, url, err, err_len)) < 0)
                        break;
                if (!is_local_redirect(&F->ans)) {
                        r = take_answer(F, url, err, err_len);
                        break;
                }
                if ((r = next_hop(F, hop, &url, err, err_len)) < 0)
                        break;
        }
        free(url);
        return r;
}

/* The commit, blob name and size from the metadata answer. */
static int read_metadata(struct fetch *F, char *err, size_t err_len)
{
        const struct answer *a = &F->ans;
        const char *etag = a->linked_etag[0] ? a->linked_etag : a->etag;

        if (!is_hex(a->commit, 40))
                return err_set(err, err_len, -EBADMSG,
                               "%s: no commit in the answer (X-Repo-Commit '%s'): is %s a Hugging Face Hub "
                               "(HF_ENDPOINT, proxy)?", F->url, a->commit, F->set.endpoint);
        memcpy(F->commit, a->commit, 41);
        /* huggingface_hub's _normalize_etag: W/"x" or "x" -> x. */
        if (strncmp(etag, "W/", 2) == 0)
                etag += 2;
        size_t n = strlen(etag);
        if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"') {
                etag++;
                n -= 2;
        }
        snprintf(F->etag, sizeof F->etag, "%.*s", (int)n, etag);
        bool ok = n > 0 && n <= 255 && F->etag[0] != '.';
        for (size_t i = 0; ok && i < n; i++)
                ok = isalnum((unsigned char)F->etag[i]) || F->etag[i] == '-' || F->etag[i] == '_' ||
                     F->etag[i] == '.';
        if (!ok)
                return err_set(err, err_len, -EBADMSG, "%s: no usable ETag in the answer ('%s')", F->url, F->etag);
        F->size = a->linked_size >= 0 ? a->linked_size : a->content_length;
        if (F->size < 0)
                return err_set(err, err_len, -EBADMSG, "%s: the answer gives no size (X-Linked-Size, Content-Length)",
                               F->url);
        if (F->size > F->max_bytes)
                return err_set(err, err_len, -E2BIG, "%s/%s is %lld bytes, over the limit of %lld", F->ref->repo,
                               F->ref->file, (long long)F->size, (long long)F->max_bytes);
        return 0;
}

static void report(struct fetch *F, bool started, bool finished)
{
        if (!F->opts || !F->opts->progress)
                return;
        int64_t now = time_now_ns();
        if (!started && !finished && now - F->last_progress_ns < PROGRESS_PERIOD_NS)
                return;
        F->last_progress_ns = now;
        struct hub_progress p = { .url = F->shown_url, .blob = F->blob, .done = F->written, .total = F->size,
                                  .resumed = F->resumed, .deadline_ns = F->deadline_ns, .started = started,
                                  .finished = finished };
        F->opts->progress(F->opts->userdata, &p);
}

/* Empties the file on disk: what follows starts at byte 0. */
static int start_over(struct fetch *F)
{
        if (ftruncate(F->fd, 0) < 0)
                return -errno;
        F->written = F->resumed = 0;
        return 0;
}

/* Whether the answer's body continues the file on disk: a 200 is the whole
 * file (what is on disk is dropped); a 206 must say, in Content-Range, that
 * it starts right where the file on disk ends, within the hub's size. If it
 * does not, the file starts over (F->restart) and this body is dropped. */
static bool body_fits(struct fetch *F)
{
        const struct answer *a = &F->get_ans;
        int r;

        if (a->status == 200 && F->written > 0 && (r = start_over(F)) < 0) {
                F->write_error = r;
                return false;
        }
        if (a->status == 206 && (a->range_first != F->written || a->range_last >= F->size ||
                                 (a->range_total >= 0 && a->range_total != F->size))) {
                if ((r = start_over(F)) < 0)
                        F->write_error = r;
                F->restart = r == 0;
                return false;
        }
        return true;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userdata)
{
        struct fetch *F = userdata;
        size_t n = size * nmemb;

        if (F->get_ans.status != 200 && F->get_ans.status != 206) {
                F->write_error = -EPROTO;   /* an error page: not ours to keep */
                return 0;
        }
        if (!F->body_started && !body_fits(F))
                return 0;
        F->body_started = true;
        if (F->written + (int64_t)n > F->size) {
                F->write_error = -E2BIG;
                return 0;
        }
        for (size_t off = 0; off < n;) {
                ssize_t w = write(F->fd, data + off, n - off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0) {
                        F->write_error = w < 0 ? -errno : -EIO;
                        return 0;
                }
                off += (size_t)w;
        }
        F->written += (int64_t)n;
        report(F, false, false);
        return n;
}

/* huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT is requests' read timeout:
 * seconds without a byte. libcurl's low-speed limit is not that (an average
 * over a window, which a slow but live transfer can fail), so the transfer
 * is watched here: libcurl calls this at least once a second. */
static int on_transfer(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
        struct fetch *F = userdata;
        int64_t now = time_now_ns();

        if (dlnow != F->xfer_seen) {
                F->xfer_seen = dlnow;
                F->last_byte_ns = now;
                return 0;
        }
        if (now - F->last_byte_ns > (int64_t)F->set.download_timeout_s * 1000000000) {
                F->stalled = true;
                return 1;   /* CURLE_ABORTED_BY_CALLBACK */
        }
        return 0;
}

static bool transient(const struct fetch *F, CURLcode c)
{
        return c == CURLE_PARTIAL_FILE || c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR || c == CURLE_GOT_NOTHING ||
               c == CURLE_OPERATION_TIMEDOUT || c == CURLE_HTTP2 || c == CURLE_HTTP2_STREAM ||
               (c == CURLE_ABORTED_BY_CALLBACK && F->stalled);
}

/* Opens path for writing without following a symbolic link (nor blocking
 * on a FIFO) and makes sure that it is a plain file of its own: anything
 * else found there (a link planted in a shared cache, a hard link to
 * another file) is removed and the file made new (O_EXCL). flags: the
 * access mode and extra flags. */
static int open_own_file(const char *path, int flags, struct stat *ret_st)
{
        const int safe = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;

        for (int tries = 0;; tries++) {
                int fd = open(path, flags | O_CREAT | safe, 0644);
                if (fd >= 0) {
                        if (fstat(fd, ret_st) < 0) {
                                int r = -errno;
                                close(fd);
                                return r;
                        }
                        if (S_ISREG(ret_st->st_mode) && ret_st->st_nlink == 1)
                                return fd;
                        close(fd);
                } else if (errno != ELOOP && errno != ENXIO && errno != EISDIR) {
                        return -errno;
                }
                if (tries > 0)
                        return -EEXIST;
                /* Not ours to write to: replaced by a new file. */
                if (unlink(path) < 0 && errno != ENOENT)
                        return -errno;
                fd = open(path, flags | O_CREAT | O_EXCL | safe, 0644);
                if (fd >= 0) {
                        if (fstat(fd, ret_st) < 0) {
                                int r = -errno;
                                close(fd);
                                return r;
                        }
                        return fd;
                }
                if (errno != EEXIST)
                        return -errno;
                /* Someone made it in between: look again, once. */
        }
}

/* Opens incomplete for appending (F->fd) and takes what it holds as the
 * start of the file unless it is longer; checks that the rest fits on the
 * disk. */
static int open_incomplete(struct fetch *F, const char *incomplete, char *err, size_t err_len)
{
        struct stat st;
        struct statvfs vfs;
        int r = 0;

        F->fd = open_own_file(incomplete, O_WRONLY | O_APPEND, &st);
        if (F->fd < 0) {
                r = F->fd;
                F->fd = -1;
                return err_set(err, err_len, r, "%s: %s", incomplete, strerror(-r));
        }
        F->written = F->resumed = st.st_size;
        if (F->written > F->size) {
                /* Not a prefix of this file: start over. */
                if (ftruncate(F->fd, 0) < 0) {
                        r = err_set(err, err_len, -errno, "%s: %s", incomplete, strerror(errno));
                        goto fail;
                }
                F->written = F->resumed = 0;
        }
        if (fstatvfs(F->fd, &vfs) == 0 && (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize < F->size - F->written) {
                r = err_set(err, err_len, -ENOSPC, "%s: %lld bytes needed, %lld free", incomplete,
                            (long long)(F->size - F->written), (long long)vfs.f_bavail * (long long)vfs.f_frsize);
                goto fail;
        }
        return 0;
fail:
        close(F->fd);
        F->fd = -1;
        return r;
}

/* One GET of the rest of the file, from F->written on; its result goes to
 * *ret_code, the body into F->fd (on_body). */
static int get_rest(struct fetch *F, char *err, size_t err_len, CURLcode *ret_code)
{
        struct curl_slist *h = NULL;
        char range[64];
        int r;

        if ((r = request_setup(F, F->download_url, &h, &F->get_ans, F->send_token)) < 0)
                return err_set(err, err_len, r, "out of memory");
        curl_easy_setopt(F->curl, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(F->curl, CURLOPT_MAXREDIRS, (long)HUB_MAX_REDIRECTS);
        curl_easy_setopt(F->curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(F->curl, CURLOPT_WRITEDATA, F);
        /* The whole transfer ends at the deadline (request_setup); a stall
         * of the download timeout ends this attempt (on_transfer). */
        curl_easy_setopt(F->curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(F->curl, CURLOPT_XFERINFOFUNCTION, on_transfer);
        curl_easy_setopt(F->curl, CURLOPT_XFERINFODATA, F);
        if (F->written > 0) {
                snprintf(range, sizeof range, "%lld-", (long long)F->written);
                curl_easy_setopt(F->curl, CURLOPT_RANGE, range);
                F->ranged = true;
        }
        F->write_error = 0;
        F->body_started = F->restart = F->stalled = false;
        F->xfer_seen = 0;
        F->last_byte_ns = time_now_ns();
        *ret_code = curl_easy_perform(F->curl);
        curl_slist_free_all(h);
        return 0;
}

/* Why on_body refused the body (F->write_error) as our code and message. */
static int body_error(struct fetch *F, const char *incomplete, char *err, size_t err_len)
{
        if (F->write_error == -EPROTO)
                return status_error(F, &F->get_ans, err, err_len);
        if (F->write_error == -E2BIG) {
                unlink(incomplete);
                return err_set(err, err_len, -EBADMSG, "%s: more than the %lld bytes announced; discarded",
                               F->shown_url, (long long)F->size);
        }
        return err_set(err, err_len, F->write_error, "%s: %s", incomplete, strerror(-F->write_error));
}

/* What the GET number attempt ended in (c) means: 0 to go on (the file is
 * complete, or the next attempt resumes or starts over), or the error. */
static int judge_get(struct fetch *F, CURLcode c, int attempt, const char *incomplete, char *err, size_t err_len)
{
        long status = F->get_ans.status;

        int r;

        if (status == 416 && attempt < HUB_RETRIES) {
                /* What is on disk does not fit this file: start over. */
                if ((r = start_over(F)) < 0)
                        return err_set(err, err_len, r, "%s: %s", incomplete, strerror(-r));
                return 0;
        }
        if (c == CURLE_WRITE_ERROR && F->restart)
                return attempt < HUB_RETRIES ? 0
                                             : err_set(err, err_len, -EPROTO,
                                                       "%s: answers a Range with other bytes than asked for "
                                                       "(Content-Range)", F->shown_url);
        if (c == CURLE_WRITE_ERROR && F->write_error < 0)
                return body_error(F, incomplete, err, err_len);
        if (c == CURLE_OK && status >= 400)
                return status_error(F, &F->get_ans, err, err_len);
        if ((c == CURLE_OK || transient(F, c)) && F->written < F->size && attempt < HUB_RETRIES) {
                /* Cut off: resume from what arrived, after a pause (not
                 * past the deadline, which the next attempt checks). */
                int64_t left = left_ms(F);
                struct timespec pause = { .tv_sec = left >= 1000 ? 1 : 0,
                                          .tv_nsec = left >= 1000 || left <= 0 ? 0 : left * 1000000 };
                nanosleep(&pause, NULL);
                return 0;
        }
        if (c == CURLE_ABORTED_BY_CALLBACK && F->stalled)
                return err_set(err, err_len, -ENETUNREACH, "%s: no byte for %d s (HF_HUB_DOWNLOAD_TIMEOUT), %d times",
                               F->shown_url, F->set.download_timeout_s, attempt + 1);
        if (c == CURLE_UNSUPPORTED_PROTOCOL && is_https(F->download_url) && F->get_ans.location[0]) {
                char *shown = url_shown(F->get_ans.location);
                r = err_set(err, err_len, -EPERM, "%s: redirect from https to '%s' refused: only https may follow",
                            F->shown_url, shown ? shown : "");
                free(shown);
                return r;
        }
        if (c != CURLE_OK)
                return transport_error(F, c, F->shown_url, err, err_len);
        if (F->written < F->size)
                return err_set(err, err_len, -EIO, "%s: %lld of %lld bytes after %d attempts", F->shown_url,
                               (long long)F->written, (long long)F->size, attempt + 1);
        return 0;
}

/* Downloads into incomplete, resuming what is there, until it holds size
 * bytes. */
static int download(struct fetch *F, const char *incomplete, char *err, size_t err_len)
{
        int r;

        if ((r = open_incomplete(F, incomplete, err, err_len)) < 0)
                return r;
        report(F, true, false);
        for (int attempt = 0; F->written < F->size; attempt++) {
                CURLcode c = CURLE_OK;

                if (left_ms(F) <= 0) {
                        r = deadline_error(F, err, err_len);
                        goto out;
                }
                if ((r = get_rest(F, err, err_len, &c)) < 0 || (r = judge_get(F, c, attempt, incomplete, err, err_len)) < 0)
                        goto out;
        }
        report(F, false, true);
        /* On disk before it is renamed into the cache, which then trusts it. */
        if (fsync(F->fd) < 0)
                r = err_set(err, err_len, -errno, "%s: %s", incomplete, strerror(errno));
out:
        if (close(F->fd) < 0 && r == 0)
                r = err_set(err, err_len, -errno, "%s: %s", incomplete, strerror(errno));
        F->fd = -1;
        return r;
}

/* huggingface_hub's lock of a blob download (filelock: flock on
 * CACHE/.locks/models--ORG--NAME/ETAG.lock), so that we and it never write
 * the same .incomplete at once. */
static int lock_blob(struct fetch *F, const char *folder, char *err, size_t err_len, int *ret_fd)
{
        char *path = strdup_printf("%s/.locks/%s/%s.lock", F->set.cache_dir, folder, F->etag);
        int fd = -1, r = 0;

        if (!path)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        if ((r = mkdir_parents(path)) < 0) {
                r = err_set(err, err_len, r, "%s: %s", path, strerror(-r));
                goto out;
        }
        struct stat st;
        fd = open_own_file(path, O_RDWR, &st);
        if (fd < 0) {
                r = err_set(err, err_len, fd, "%s: %s", path, strerror(-fd));
                goto out;
        }
        int64_t until = time_now_ns() + (int64_t)HUB_LOCK_WAIT_S * 1000000000;
        bool deadline_first = F->deadline_ns < until;
        until = deadline_first ? F->deadline_ns : until;
        while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK && errno != EINTR) {
                        r = err_set(err, err_len, -errno, "%s: %s", path, strerror(errno));
                        goto out;
                }
                if (time_now_ns() > until) {
                        r = deadline_first ? deadline_error(F, err, err_len)
                                           : err_set(err, err_len, -ETIMEDOUT, "%s: another download held it for %d s",
                                                     path, HUB_LOCK_WAIT_S);
                        goto out;
                }
                struct timespec pause = { .tv_nsec = 200000000 };
                nanosleep(&pause, NULL);
        }
        *ret_fd = fd;
        fd = -1;
out:
        if (fd >= 0)
                close(fd);
        free(path);
        return r;
}

static int make_result(const char *pointer, const char *commit, bool downloaded, bool network,
                       struct hub_file **ret_file)
{
        struct hub_file *f = calloc(1, sizeof *f);
        if (!f || !(f->path = strdup(pointer))) {
                free(f);
                return -ENOMEM;
        }
        memcpy(f->commit, commit, 41);
        f->downloaded = downloaded;
        f->network = network;
        *ret_file = f;
        return 0;
}

/* huggingface_hub's repo_folder_name: models--ORG--NAME. */
static void repo_folder(const char *repo, char *out, size_t len)
{
        snprintf(out, len, "models--%s", repo);
        for (char *s = strchr(out + 8, '/'); s; s = strchr(s, '/')) {
                memmove(s + 2, s + 1, strlen(s + 1) + 1);
                s[0] = s[1] = '-';
        }
}

/* The file as the cache has it for the revision: -ENOENT (no message) if
 * the revision or the file is not there. */
static int from_cache(struct fetch *F, char *err, size_t err_len, struct hub_file **ret_file)
{
        char commit[41];
        int r;

        if (read_ref(F->storage, F->ref, commit) < 0)
                return -ENOENT;
        if (!(F->pointer = strdup_printf("%s/snapshots/%s/%s", F->storage, commit, F->ref->file)))
                return err_set(err, err_len, -ENOMEM, "out of memory");
        if (!file_exists(F->pointer)) {
                free(F->pointer);
                F->pointer = NULL;
                return -ENOENT;
        }
        if ((r = make_result(F->pointer, commit, false, false, ret_file)) < 0)
                return err_set(err, err_len, r, "out of memory");
        return 0;
}

/* The resolve URL of the file, with revision and path quoted, or NULL. */
static char *resolve_url(const struct fetch *F)
{
        char *u = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&u, &len);

        if (!f)
                return NULL;
        fprintf(f, "%s/%s/resolve/", F->set.endpoint, F->ref->repo);
        url_quote(f, F->ref->revision, false);
        fputc('/', f);
        url_quote(f, F->ref->file, true);
        if (fclose(f) != 0) {
                free(u);
                return NULL;
        }
        return u;
}

/* libcurl, the resolve URL and a handle for the requests. */
static int connect_hub(struct fetch *F, char *err, size_t err_len)
{
        pthread_once(&curl_once, curl_init_once);
        if (curl_init_result != CURLE_OK)
                return err_set(err, err_len, -ENOMEM, "libcurl: %s", curl_easy_strerror(curl_init_result));
        F->url = resolve_url(F);
        if (!F->url || !(F->curl = curl_easy_init()))
                return err_set(err, err_len, -ENOMEM, "out of memory");
        return 0;
}

/* Paths of the snapshot, the blob and its download, and the download URL
 * as shown (without its query: a CDN's holds a signature). */
static int cache_paths(struct fetch *F, char *err, size_t err_len)
{
        F->shown_url = url_shown(F->download_url);
        F->pointer = strdup_printf("%s/snapshots/%s/%s", F->storage, F->commit, F->ref->file);
        F->blob = strdup_printf("%s/blobs/%s", F->storage, F->etag);
        F->incomplete = strdup_printf("%s/blobs/%s.incomplete", F->storage, F->etag);
        if (!F->shown_url || !F->pointer || !F->blob || !F->incomplete)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        return 0;
}

/* Nothing enters the cache unchecked: an LFS file's ETag is the sha256 of
 * its content, and a file kept in git (config.json) has its git blob id,
 * the sha1 of "blob SIZE\0" and the content. Any other ETag leaves the
 * size (download stops at it and wants all of it). A mismatch discards the
 * download. */
static int check_download(struct fetch *F, char *err, size_t err_len)
{
        char got[2 * EVP_MAX_MD_SIZE + 1], prefix[48];
        bool lfs = is_hex(F->etag, 64);
        int r, n = 0;

        if (!lfs && !is_hex(F->etag, 40))
                return 0;
        if (!lfs)
                n = snprintf(prefix, sizeof prefix, "blob %lld", (long long)F->size) + 1;   /* with its NUL */
        r = hub_digest_hex(lfs ? HUB_SHA256 : HUB_SHA1, prefix, (size_t)n, NULL, 0, F->incomplete, got);
        if (r < 0)
                return err_set(err, err_len, r, "%s: %s", F->incomplete, strerror(-r));
        if (strcmp(got, F->etag) != 0) {
                unlink(F->incomplete);
                return err_set(err, err_len, -EBADMSG, "%s/%s: %s of the download is %s, the hub says %s; discarded",
                               F->ref->repo, F->ref->file, lfs ? "sha256" : "git blob sha1", got, F->etag);
        }
        return 0;
}

/* The blob in the cache: downloaded, checked and renamed into place unless
 * it is there already (or another process finished it while we waited for
 * its lock, held until the end of the fetch). */
static int store_blob(struct fetch *F, const char *folder, char *err, size_t err_len, bool *ret_downloaded)
{
        int r;

        if (!file_exists(F->blob)) {
                if ((r = mkdir_parents(F->blob)) < 0)
                        return err_set(err, err_len, r, "%s: %s", F->blob, strerror(-r));
                if ((r = lock_blob(F, folder, err, err_len, &F->lock_fd)) < 0)
                        return r;
        }
        if (file_exists(F->blob)) {
                *ret_downloaded = false;
                return 0;
        }
        F->ranged = false;
        if ((r = download(F, F->incomplete, err, err_len)) == 0)
                r = check_download(F, err, err_len);
        /* Bytes from before a Range (an earlier run's, or a server's idea of
         * the rest) may be what failed: once more from zero. */
        if (r == -EBADMSG && F->ranged)
                if ((r = download(F, F->incomplete, err, err_len)) == 0)
                        r = check_download(F, err, err_len);
        if (r < 0)
                return r;
        if (rename(F->incomplete, F->blob) < 0)
                return err_set(err, err_len, -errno, "%s: %s", F->blob, strerror(errno));
        *ret_downloaded = true;
        return 0;
}

/* The snapshot's link to the blob and the revision's ref to the commit. */
static int publish(struct fetch *F, bool downloaded, char *err, size_t err_len, struct hub_file **ret_file)
{
        int r;

        if (!file_exists(F->pointer) && (r = link_snapshot(F->pointer, F->ref->file, F->etag)) < 0)
                return err_set(err, err_len, r, "%s: %s", F->pointer, strerror(-r));
        if ((r = write_ref(F->storage, F->ref, F->commit)) < 0)
                return err_set(err, err_len, r, "%s/refs/%s: %s", F->storage, F->ref->revision, strerror(-r));
        if ((r = make_result(F->pointer, F->commit, downloaded, true, ret_file)) < 0)
                return err_set(err, err_len, r, "out of memory");
        return 0;
}

static void fetch_clear(struct fetch *F)
{
        if (F->lock_fd >= 0)
                close(F->lock_fd); /* releases the flock */
        if (F->curl)
                curl_easy_cleanup(F->curl);
        free(F->pointer);
        free(F->blob);
        free(F->incomplete);
        free(F->url);
        free(F->download_url);
        free(F->shown_url);
        free(F->storage);
        hub_settings_clear(&F->set);
}

int hub_fetch(const struct hub_ref *ref, const struct hub_opts *opts, char *err, size_t err_len,
              struct hub_file **ret_file)
{
        struct fetch F = { .ref = ref, .opts = opts, .fd = -1, .lock_fd = -1 };
        char folder[HUB_REPO_MAX + 16];
        bool downloaded = false;
        int r;

        if ((r = hub_settings_get(opts, err, err_len, &F.set)) < 0)
                return r;
        F.max_bytes = opts && opts->max_bytes > 0 ? opts->max_bytes : HUB_MAX_BYTES_DEFAULT;
        F.deadline_s = opts && opts->deadline_s > 0 ? opts->deadline_s : HUB_DEADLINE_DEFAULT_S;
        F.deadline_ns = time_now_ns() + F.deadline_s * 1000000000;
        repo_folder(ref->repo, folder, sizeof folder);
        if (!(F.storage = strdup_printf("%s/%s", F.set.cache_dir, folder))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto out;
        }
        /* In the cache for this revision: no network. */
        bool refresh = opts && opts->refresh && !F.set.offline;
        if (!refresh && (r = from_cache(&F, err, err_len, ret_file)) != -ENOENT)
                goto out;
        if (F.set.offline) {
                r = err_set(err, err_len, -ENOENT, "%s/%s at %s is not in the cache %s, and HF_HUB_OFFLINE is set",
                            ref->repo, ref->file, ref->revision, F.set.cache_dir);
                goto out;
        }
        if ((r = connect_hub(&F, err, err_len)) < 0 || (r = head(&F, err, err_len)) < 0 ||
            (r = read_metadata(&F, err, err_len)) < 0 || (r = cache_paths(&F, err, err_len)) < 0 ||
            (r = store_blob(&F, folder, err, err_len, &downloaded)) < 0)
                goto out;
        r = publish(&F, downloaded, err, err_len, ret_file);
out:
        fetch_clear(&F);
        if (r < 0)
                redact_message(err, err_len);
        return r;
}

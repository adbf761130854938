/* auth: API keys as SHA-256 digests, checked in constant time, rotated on reload. */
#include "auth.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

struct auth_keys {
        int n;
        uint8_t digest[][AUTH_DIGEST_LEN];   /* [n] */
};

struct auth {
        char *path;
        pthread_rwlock_t lock;               /* guards keys: readers check, auth_reload swaps */
        struct auth_keys *keys;              /* never NULL */
        atomic_ullong failures[AUTH_N_VERDICTS];
        atomic_ullong reloads, reload_failures;
};

const char *auth_verdict_name(enum auth_verdict v)
{
        static const char *const names[AUTH_N_VERDICTS] = {
                [AUTH_OK] = "ok", [AUTH_MISSING] = "missing", [AUTH_MALFORMED] = "malformed",
                [AUTH_INVALID] = "invalid",
        };
        return (unsigned)v < AUTH_N_VERDICTS ? names[v] : "?";
}

static int sha256(const void *data, size_t len, uint8_t out[AUTH_DIGEST_LEN])
{
        unsigned n = 0;

        if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != AUTH_DIGEST_LEN)
                return -EIO;
        return 0;
}

int auth_hash_key(const void *key, size_t len, char hex[2 * AUTH_DIGEST_LEN + 1])
{
        static const char digits[] = "0123456789abcdef";
        uint8_t d[AUTH_DIGEST_LEN];
        int r;

        if ((r = sha256(key, len, d)) < 0)
                return r;
        for (int i = 0; i < AUTH_DIGEST_LEN; i++) {
                hex[2 * i] = digits[d[i] >> 4];
                hex[2 * i + 1] = digits[d[i] & 15];
        }
        hex[2 * AUTH_DIGEST_LEN] = '\0';
        return 0;
}

static bool is_blank(char c)
{
        return c == ' ' || c == '\t' || c == '\r';
}

/* One line (without its '\n') into *ret_digest: 1 for a digest, 0 for a
 * blank or comment line, -EBADMSG with why. The line's bytes are never
 * copied into why: it may hold a key pasted by mistake. */
static int parse_line(const char *p, size_t n, uint8_t ret_digest[AUTH_DIGEST_LEN], const char **ret_why)
{
        uint8_t d[AUTH_DIGEST_LEN];
        size_t i = 0;

        while (i < n && is_blank(p[i]))
                i++;
        if (i == n || p[i] == '#')
                return 0;
        size_t start = i;
        while (i < n && !is_blank(p[i]) && p[i] != '#')
                i++;
        if (i - start != 2 * AUTH_DIGEST_LEN) {
                *ret_why = "not a SHA-256 digest of 64 hexadecimal digits (make one with `effnet hash-key`)";
                return -EBADMSG;
        }
        for (size_t j = 0; j < AUTH_DIGEST_LEN; j++) {
                int hi = hex_value(p[start + 2 * j]), lo = hex_value(p[start + 2 * j + 1]);
                if (hi < 0 || lo < 0) {
                        *ret_why = "a digest has a character that is not a hexadecimal digit";
                        return -EBADMSG;
                }
                d[j] = (uint8_t)(hi << 4 | lo);
        }
        size_t end = i;
        while (i < n && is_blank(p[i]))
                i++;
        if (i < n && (p[i] != '#' || i == end)) {
                *ret_why = "text after the digest that is not a '#' comment after a blank";
                return -EBADMSG;
        }
        memcpy(ret_digest, d, AUTH_DIGEST_LEN);
        return 1;
}

int auth_keys_parse(const char *text, size_t len, char *err, size_t err_len, struct auth_keys **ret_keys)
{
        struct auth_keys *k = NULL;
        const char *why = NULL;
        size_t cap = 0, pos = 0;
        int line = 0, r;

        if (len > AUTH_MAX_FILE_BYTES)
                return err_set(err, err_len, -E2BIG, "larger than %d bytes", AUTH_MAX_FILE_BYTES);
        /* At most one digest per 65 bytes (64 digits and a newline). */
        cap = len / (2 * AUTH_DIGEST_LEN + 1) + 1;
        if (cap > AUTH_MAX_KEYS + 1)
                cap = AUTH_MAX_KEYS + 1;
        k = malloc(sizeof *k + cap * AUTH_DIGEST_LEN);
        if (!k)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        k->n = 0;
        while (pos < len) {
                const char *p = text + pos;
                const char *nl = memchr(p, '\n', len - pos);
                size_t n = nl ? (size_t)(nl - p) : len - pos;
                uint8_t d[AUTH_DIGEST_LEN];

                line++;
                pos += n + (nl ? 1 : 0);
                if (memchr(p, '\0', n)) {
                        r = err_set(err, err_len, -EBADMSG, "line %d: a NUL byte", line);
                        goto fail;
                }
                if ((r = parse_line(p, n, d, &why)) < 0) {
                        r = err_set(err, err_len, r, "line %d: %s", line, why);
                        goto fail;
                }
                if (r == 0)
                        continue;
                if (k->n == AUTH_MAX_KEYS) {
                        r = err_set(err, err_len, -E2BIG, "line %d: more than %d keys", line, AUTH_MAX_KEYS);
                        goto fail;
                }
                memcpy(k->digest[k->n++], d, AUTH_DIGEST_LEN);
        }
        if (k->n == 0) {
                r = err_set(err, err_len, -EINVAL, "no key in it (one SHA-256 digest per line)");
                goto fail;
        }
        *ret_keys = k;
        return 0;
fail:
        free(k);
        return r;
}

int auth_keys_count(const struct auth_keys *k)
{
        return k ? k->n : 0;
}

bool auth_keys_match(const struct auth_keys *k, const void *key, size_t len)
{
        uint8_t d[AUTH_DIGEST_LEN];
        int diff = 1;

        if (sha256(key, len, d) < 0)
                return false;
        /* Every digest is compared, whichever matches: no early exit. */
        for (int i = 0; i < k->n; i++)
                diff &= CRYPTO_memcmp(d, k->digest[i], AUTH_DIGEST_LEN) != 0;
        return diff == 0;
}

struct auth_keys *auth_keys_free(struct auth_keys *k)
{
        if (k)
                OPENSSL_cleanse(k->digest, (size_t)k->n * AUTH_DIGEST_LEN);
        free(k);
        return NULL;
}

/* The file at path, parsed; err names the file. */
static int keys_read(const char *path, char *err, size_t err_len, struct auth_keys **ret_keys)
{
        char *text = NULL, why[200];
        struct stat st;
        size_t len = 0;
        int fd, r;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return err_set(err, err_len, -errno, "api-keys-file %s: %s", path, strerror(errno));
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                r = err_set(err, err_len, -EINVAL, "api-keys-file %s: not a regular file", path);
                goto out;
        }
        if (st.st_size > AUTH_MAX_FILE_BYTES) {
                r = err_set(err, err_len, -E2BIG, "api-keys-file %s: larger than %d bytes", path,
                            AUTH_MAX_FILE_BYTES);
                goto out;
        }
        text = malloc((size_t)st.st_size + 1);
        if (!text) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto out;
        }
        /* Read to the end, not st_size: the file may change meanwhile. */
        for (;;) {
                ssize_t got = read(fd, text + len, (size_t)st.st_size + 1 - len);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0) {
                        r = err_set(err, err_len, -errno, "api-keys-file %s: %s", path, strerror(errno));
                        goto out;
                }
                if (got == 0)
                        break;
                len += (size_t)got;
                if (len > (size_t)st.st_size) {
                        r = err_set(err, err_len, -EAGAIN, "api-keys-file %s: grew while read", path);
                        goto out;
                }
        }
        if ((r = auth_keys_parse(text, len, why, sizeof why, ret_keys)) < 0)
                err_set(err, err_len, r, "api-keys-file %s: %s", path, why);
out:
        if (text)
                OPENSSL_cleanse(text, len);
        free(text);
        close(fd);
        return r;
}

int auth_new(const char *path, char *err, size_t err_len, struct auth **ret_auth)
{
        struct auth *a = calloc(1, sizeof *a);
        int r;

        if (!a || !(a->path = strdup(path))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto fail;
        }
        if ((r = keys_read(path, err, err_len, &a->keys)) < 0)
                goto fail;
        pthread_rwlock_init(&a->lock, NULL);
        *ret_auth = a;
        return 0;
fail:
        if (a)
                free(a->path);
        free(a);
        return r;
}

int auth_reload(struct auth *a, char *err, size_t err_len)
{
        struct auth_keys *k = NULL, *old;
        int r;

        if ((r = keys_read(a->path, err, err_len, &k)) < 0) {
                atomic_fetch_add(&a->reload_failures, 1);
                return r;
        }
        pthread_rwlock_wrlock(&a->lock);
        old = a->keys;
        a->keys = k;
        pthread_rwlock_unlock(&a->lock);
        auth_keys_free(old);
        atomic_fetch_add(&a->reloads, 1);
        return 0;
}

/* token68 (RFC 7235) allows less than this: any visible ASCII is taken,
 * so that what a client pasted is checked rather than refused. */
enum auth_verdict auth_parse_bearer(const char *v, const char **ret_key, size_t *ret_len)
{
        size_t n = 0;

        if (!v)
                return AUTH_MISSING;
        while (*v == ' ' || *v == '\t')
                v++;
        if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t'))
                return AUTH_MALFORMED;
        v += 6;
        while (*v == ' ' || *v == '\t')
                v++;
        while (v[n] > ' ' && v[n] < 0x7f && n <= AUTH_MAX_KEY_LEN)
                n++;
        size_t end = n;
        while (v[end] == ' ' || v[end] == '\t')
                end++;
        if (n == 0 || n > AUTH_MAX_KEY_LEN || v[end] != '\0')
                return AUTH_MALFORMED;
        *ret_key = v;
        *ret_len = n;
        return AUTH_OK;
}

enum auth_verdict auth_check(struct auth *a, const char *authorization)
{
        const char *key = NULL;
        size_t len = 0;
        enum auth_verdict v = auth_parse_bearer(authorization, &key, &len);

        if (v == AUTH_OK) {
                pthread_rwlock_rdlock(&a->lock);
                if (!auth_keys_match(a->keys, key, len))
                        v = AUTH_INVALID;
                pthread_rwlock_unlock(&a->lock);
        }
        if (v != AUTH_OK)
                atomic_fetch_add(&a->failures[v], 1);
        return v;
}

void auth_stats_snapshot(struct auth *a, struct auth_stats *ret_stats)
{
        struct auth_stats st = { 0 };

        for (int i = 0; i < AUTH_N_VERDICTS; i++)
                st.failures[i] = atomic_load(&a->failures[i]);
        st.reloads = atomic_load(&a->reloads);
        st.reload_failures = atomic_load(&a->reload_failures);
        pthread_rwlock_rdlock(&a->lock);
        st.keys = a->keys->n;
        pthread_rwlock_unlock(&a->lock);
        *ret_stats = st;
}

struct auth *auth_free(struct auth *a)
{
        if (!a)
                return NULL;
        auth_keys_free(a->keys);
        pthread_rwlock_destroy(&a->lock);
        free(a->path);
        free(a);
        return NULL;
}

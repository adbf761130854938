/* auth: API keys. Clients present a key as "Authorization: Bearer KEY"
 * (HTTP) or as the "authorization" metadata (gRPC); the server keeps only
 * the keys' SHA-256 digests, read from the api-keys-file, and replaces them
 * at once on auth_reload (SIGHUP), so that keys rotate without a restart.
 * No transport here: the caller hands over the header's value and turns
 * the verdict into its own answer (401 + WWW-Authenticate: Bearer, gRPC
 * UNAUTHENTICATED).
 *
 *   struct auth *a;
 *   char err[256];
 *   if (auth_new("/etc/effnetd/api-keys", err, sizeof err, &a) < 0)
 *           die(err);
 *   enum auth_verdict v = auth_check(a, header_value);   // any thread
 *   if (v != AUTH_OK)
 *           answer_401(auth_verdict_name(v));
 *   if (auth_reload(a, err, sizeof err) < 0)             // SIGHUP
 *           log("keeping the old keys: %s", err);
 *   a = auth_free(a);
 *
 * The key file: one SHA-256 digest per line, as 64 hexadecimal digits
 * (`effnet hash-key` makes one from a key on its standard input; upper or
 * lower case), optionally followed by blanks and a '#' comment; blank lines
 * and lines starting with '#' are skipped. Anything else is an error that
 * names the line, and so is a file without a key.
 *
 * A presented key is hashed and compared with every digest of the set in
 * constant time (CRYPTO_memcmp), without stopping at a match: the time an
 * answer takes depends on the number of keys only, not on how much of a
 * key was right. Keys and digests are never written to a message.
 */
#ifndef EFFNET_SERVER_AUTH_H
#define EFFNET_SERVER_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_DIGEST_LEN 32                 /* SHA-256 */
#define AUTH_MAX_KEYS 4096                 /* digests in one file */
#define AUTH_MAX_FILE_BYTES (1 << 20)      /* a larger key file is refused */
#define AUTH_MAX_KEY_LEN 4096              /* a longer presented key is refused unhashed */

/* What a request's credentials came to. The failures are counted by
 * reason (auth_stats). */
enum auth_verdict {
        AUTH_OK,
        AUTH_MISSING,      /* no Authorization header / metadata */
        AUTH_MALFORMED,    /* not "Bearer KEY" with a KEY of 1..AUTH_MAX_KEY_LEN visible characters */
        AUTH_INVALID,      /* a key that is not in the set */
        AUTH_N_VERDICTS,
};

/* "ok", "missing", "malformed", "invalid": the reason label of
 * effnetd_auth_failures_total. */
const char *auth_verdict_name(enum auth_verdict v);

/* An immutable set of key digests. */
struct auth_keys;

/* Parses a key file's text (len bytes, not NUL-terminated). On failure err
 * names the line ("line 3: ..."): -EBADMSG for a bad line, -EINVAL for a
 * file without a key, -E2BIG over AUTH_MAX_KEYS, -ENOMEM. Pure: no I/O. */
int auth_keys_parse(const char *text, size_t len, char *err, size_t err_len, struct auth_keys **ret_keys);
/* How many digests the set holds. */
int auth_keys_count(const struct auth_keys *k);
/* Whether key (len bytes) hashes to a digest of the set, in time that does
 * not depend on the key's bytes. */
bool auth_keys_match(const struct auth_keys *k, const void *key, size_t len);
struct auth_keys *auth_keys_free(struct auth_keys *k);

/* The lowercase hex SHA-256 of key (len bytes) into hex (65 bytes with the
 * NUL): the line `effnet hash-key` prints. -EIO when libcrypto fails. */
int auth_hash_key(const void *key, size_t len, char hex[2 * AUTH_DIGEST_LEN + 1]);

struct auth;

/* Reads path (auth_keys_parse's format). path is copied. On failure err
 * names the file and the line. */
int auth_new(const char *path, char *err, size_t err_len, struct auth **ret_auth);

/* Reads the file again and serves its keys from now on; on any error the
 * keys in use stay, and err says why. Requests being checked finish with
 * the set they started with. Any thread. */
int auth_reload(struct auth *a, char *err, size_t err_len);

/* The key of an Authorization value "Bearer KEY" (the scheme in any case,
 * blanks around KEY): AUTH_OK with *ret_key pointing into v and *ret_len
 * its length (1..AUTH_MAX_KEY_LEN visible ASCII characters), AUTH_MISSING
 * for NULL, AUTH_MALFORMED otherwise. Pure. */
enum auth_verdict auth_parse_bearer(const char *v, const char **ret_key, size_t *ret_len);

/* The verdict on an Authorization value ("Bearer KEY"; the scheme's case
 * is ignored, as RFC 7235 says), NULL when the request had none. Failures
 * are counted. Any thread. */
enum auth_verdict auth_check(struct auth *a, const char *authorization);

/* Counters since auth_new, for /metrics. */
struct auth_stats {
        uint64_t failures[AUTH_N_VERDICTS];   /* [AUTH_OK] stays 0 */
        uint64_t reloads, reload_failures;
        int keys;                              /* in the set in use */
};
void auth_stats_snapshot(struct auth *a, struct auth_stats *ret_stats);

/* Accepts NULL; returns NULL. No auth_check may run. */
struct auth *auth_free(struct auth *a);

#endif

/* tls: the server's certificate, key and (for mutual TLS) client CA, loaded
 * from PEM files with GnuTLS (the only module that includes gnutls.h), and
 * replaced at once by tls_reload (SIGHUP) while connections go on.
 * libmicrohttpd takes the certificate through a GnuTLS retrieve callback
 * (tls_cert_callback) for each handshake, so a new handshake gets the
 * credentials current then, and an open connection keeps the ones it
 * started with. TLS 1.2 and 1.3 only (tls_priorities).
 *
 *   struct tls_opts o = { .cert = "server.pem", .key = "server.key",
 *                         .client_ca = NULL };
 *   struct tls *t;
 *   char err[512];
 *   if (tls_new(&o, err, sizeof err, &t) < 0)
 *           die(err);
 *   MHD_start_daemon(MHD_USE_TLS | ..., MHD_OPTION_HTTPS_PRIORITIES, tls_priorities(),
 *                    MHD_OPTION_HTTPS_CERT_CALLBACK2, tls_cert_callback(t), ...);
 *   if (tls_reload(t, err, sizeof err) < 0)   // SIGHUP
 *           log("keeping the old certificate: %s", err);
 *   t = tls_free(t);                          // after the listeners stopped
 *
 * With a client CA, a client must present a certificate that chains to it
 * (and is not expired); the handshake fails otherwise.
 *
 * GnuTLS's retrieve callback has no argument of ours, so the credentials
 * being served are the module's: one struct tls at a time (-EBUSY).
 */
#ifndef EFFNET_SERVER_TLS_H
#define EFFNET_SERVER_TLS_H

#include <stddef.h>
#include <stdint.h>

#define TLS_MAX_FILE_BYTES (1 << 20)   /* a larger PEM file is refused */

struct tls_opts {
        const char *cert;        /* PEM: the server's certificate, then its chain */
        const char *key;         /* PEM: its private key (unencrypted) */
        const char *client_ca;   /* PEM: CAs that client certificates must chain to; NULL = no client certificates */
};

struct tls;

/* Loads the files (paths copied) and checks that the key is the
 * certificate's. -EBUSY while another struct tls exists, -ENOENT and other
 * file errors, -EBADMSG for PEM that GnuTLS refuses, -EINVAL for a key that
 * does not match, -ENOMEM; err names the file. */
int tls_new(const struct tls_opts *opts, char *err, size_t err_len, struct tls **ret_tls);

/* Loads the files again and serves them to new handshakes; on any error
 * the credentials in use stay and err says why. Any thread. */
int tls_reload(struct tls *t, char *err, size_t err_len);

/* The GnuTLS priority string: TLS 1.3 and 1.2 with the system's default
 * ciphers. */
const char *tls_priorities(void);

/* A function pointer of no type of GnuTLS, so that callers need no
 * gnutls.h: it is a gnutls_certificate_retrieve_function3, for
 * MHD_OPTION_HTTPS_CERT_CALLBACK2. */
typedef void (*tls_callback)(void);
tls_callback tls_cert_callback(const struct tls *t);

/* Counters since tls_new, for /metrics and the log. */
struct tls_stats {
        uint64_t handshakes;             /* certificates handed to a handshake */
        uint64_t client_cert_refused;    /* client certificates that failed verification */
        uint64_t reloads, reload_failures;
        int64_t not_after;               /* the served certificate's expiry, Unix seconds */
};
void tls_stats_snapshot(struct tls *t, struct tls_stats *ret_stats);

/* Accepts NULL; returns NULL. Only once no connection uses it (the
 * listeners are stopped). */
struct tls *tls_free(struct tls *t);

#endif

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
 * A transport on its own sockets (non-blocking, its own event loop) serves
 * TLS with struct tls_conn, on the same credentials and their reloads:
 *
 *   static const char *const alpn[] = { "h2", NULL };
 *   struct tls_conn *c;
 *   tls_conn_new(t, fd, alpn, &c);
 *   r = tls_conn_handshake(c);         // 0 done; -EAGAIN: poll, then again
 *   n = tls_conn_recv(c, buf, sizeof buf);   // > 0, 0 at the end, -EAGAIN
 *   n = tls_conn_send(c, data, len);   // -EAGAIN: again with the same bytes
 *   // poll for POLLOUT when tls_conn_want_write(c), else POLLIN; bytes
 *   // already decrypted (tls_conn_pending) need no poll
 *   tls_conn_bye(c);                   // a graceful end: close_notify
 *   c = tls_conn_free(c);
 *
 * GnuTLS's retrieve callback has no argument of ours, so the credentials
 * being served are the module's: one struct tls at a time (-EBUSY).
 */
#ifndef EFFNET_SERVER_TLS_H
#define EFFNET_SERVER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TLS_MAX_FILE_BYTES (1 << 20)   /* a larger PEM file is refused */
/* What one server connection's TLS holds in GnuTLS (its session, record
 * buffers, the handshake's leftovers), which GnuTLS allocates where no
 * budget sees it: a transport charges this much to the client's budget
 * when it accepts a TLS connection. Measured: the daemon's RSS with 200
 * idle gRPC connections after a TLS 1.3 handshake, less that with 200
 * cleartext ones, 26.7 KiB a connection (GnuTLS 3.7.9, x86-64); rounded
 * up. */
#define TLS_CONN_BYTES (32 << 10)

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

/* One server connection on a socket of the caller's (non-blocking, still
 * the caller's to close after tls_conn_free). alpn: the protocols offered,
 * NULL-terminated, one of which the client must pick (gRPC: "h2"); NULL
 * for none. -ENOMEM, -EIO (GnuTLS refused the set-up). */
struct tls_conn;
int tls_conn_new(struct tls *t, int fd, const char *const *alpn, struct tls_conn **ret_conn);

/* Goes on with the handshake: 0 once it is complete, -EAGAIN when the
 * socket must be ready first (tls_conn_want_write says for what),
 * -EPROTO when it failed (a TLS version or protocol refused, a client
 * certificate refused with tls-client-ca), -ECONNRESET when the client
 * left. */
int tls_conn_handshake(struct tls_conn *c);

/* Application bytes: how many were read (0: the client closed), or
 * -EAGAIN, -ECONNRESET, -EPROTO. */
ssize_t tls_conn_recv(struct tls_conn *c, void *buf, size_t len);

/* How many of the bytes were sent, or -EAGAIN (then call again with the
 * same bytes: GnuTLS holds the record), -EPIPE, -EPROTO. */
ssize_t tls_conn_send(struct tls_conn *c, const void *buf, size_t len);

/* Sends TLS's close_notify alert, so that the client sees the end of
 * the connection as the server's choice and not as a cut (a truncation
 * attack, to a client that checks). Does not wait for the client's
 * alert. 0 once it is out; -EAGAIN when the socket is full (the caller
 * may call again, or give up and close); -EPIPE, -EPROTO. */
int tls_conn_bye(struct tls_conn *c);

/* Whether the last call that returned -EAGAIN waits for the socket to be
 * writable (else readable). */
bool tls_conn_want_write(const struct tls_conn *c);

/* Decrypted bytes that tls_conn_recv returns without the socket being
 * readable again. */
size_t tls_conn_pending(const struct tls_conn *c);

/* The protocol the handshake agreed on by ALPN into buf ("" for none). */
void tls_conn_alpn(const struct tls_conn *c, char *buf, size_t len);

/* Accepts NULL; returns NULL. Does not close the socket. */
struct tls_conn *tls_conn_free(struct tls_conn *c);

/* Accepts NULL; returns NULL. Only once no connection uses it (the
 * listeners are stopped, every tls_conn freed). */
struct tls *tls_free(struct tls *t);

#endif

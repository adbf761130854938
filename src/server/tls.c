/* tls: certificate, key and client CA from PEM files, served to each TLS
 * handshake through a GnuTLS retrieve callback, replaced on reload. */
#include "tls.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#define CHAIN_MAX 16   /* certificates in the served chain, and in a client's */

/* One load of the files, immutable, shared by the handshakes that took it
 * (refs). The PEM stays as read: each handshake imports its own copy of
 * the chain and key, which GnuTLS frees with the session
 * (GNUTLS_CERT_RETR_DEINIT_ALL), so that a reload never frees what an open
 * connection uses. */
struct creds {
        atomic_int refs;
        gnutls_datum_t cert;             /* PEM, malloc'ed */
        gnutls_datum_t key;              /* PEM, malloc'ed, wiped when freed */
        gnutls_x509_trust_list_t ca;     /* client CAs, or NULL */
        int64_t not_after;
};

struct tls {
        char *cert, *key, *client_ca;    /* paths, owned */
        atomic_ullong handshakes, refused, reloads, reload_failures;
        /* For struct tls_conn: credentials whose certificate is retrieve()'s,
         * and the parsed priorities. Immutable after tls_new. */
        gnutls_certificate_credentials_t cred;
        gnutls_priority_t prio;
};

struct tls_conn {
        gnutls_session_t session;
        bool alpn;                       /* the client must pick an offered protocol */
};

/* The module's credentials: GnuTLS's callback has no argument of ours. */
static pthread_mutex_t tls_lock = PTHREAD_MUTEX_INITIALIZER;   /* guards tls_current, tls_owner */
static struct creds *tls_current;
static struct tls *tls_owner;

static void creds_put(struct creds *c)
{
        if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
                return;
        free(c->cert.data);
        if (c->key.data) {
                gnutls_memset(c->key.data, 0, c->key.size);
                free(c->key.data);
        }
        if (c->ca)
                gnutls_x509_trust_list_deinit(c->ca, 1);
        free(c);
}

static struct creds *creds_get(void)
{
        struct creds *c;

        pthread_mutex_lock(&tls_lock);
        c = tls_current;
        if (c)
                atomic_fetch_add(&c->refs, 1);
        pthread_mutex_unlock(&tls_lock);
        return c;
}

static int read_file(const char *what, const char *path, char *err, size_t err_len, gnutls_datum_t *ret)
{
        struct stat st;
        uint8_t *buf = NULL;
        size_t len = 0;
        int fd, r = 0;

        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
                return err_set(err, err_len, -errno, "%s %s: %s", what, path, strerror(errno));
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > TLS_MAX_FILE_BYTES) {
                r = err_set(err, err_len, -EINVAL, "%s %s: not a regular file of at most %d bytes", what, path,
                            TLS_MAX_FILE_BYTES);
                goto out;
        }
        if (!(buf = malloc((size_t)st.st_size + 1))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto out;
        }
        for (;;) {
                ssize_t got = read(fd, buf + len, (size_t)st.st_size + 1 - len);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0) {
                        r = err_set(err, err_len, -errno, "%s %s: %s", what, path, strerror(errno));
                        goto out;
                }
                if (got == 0)
                        break;
                len += (size_t)got;
                if (len > (size_t)st.st_size) {
                        r = err_set(err, err_len, -EAGAIN, "%s %s: grew while read", what, path);
                        goto out;
                }
        }
        buf[len] = '\0';
        *ret = (gnutls_datum_t){ .data = buf, .size = (unsigned)len };
        buf = NULL;
out:
        free(buf);
        close(fd);
        return r;
}

static void pcerts_deinit(gnutls_pcert_st *p, unsigned n)
{
        for (unsigned i = 0; i < n; i++)
                gnutls_pcert_deinit(&p[i]);
}

/* Whether the key's public half is the certificate's. */
static bool key_matches(gnutls_privkey_t key, gnutls_pcert_st *leaf)
{
        gnutls_pubkey_t pub = NULL;
        gnutls_datum_t a = { 0 }, b = { 0 };
        bool same = false;

        if (gnutls_pubkey_init(&pub) < 0)
                return false;
        if (gnutls_pubkey_import_privkey(pub, key, 0, 0) == 0 &&
            gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_DER, &a) == 0 &&
            gnutls_pubkey_export2(leaf->pubkey, GNUTLS_X509_FMT_DER, &b) == 0)
                same = a.size == b.size && memcmp(a.data, b.data, a.size) == 0;
        gnutls_free(a.data);
        gnutls_free(b.data);
        gnutls_pubkey_deinit(pub);
        return same;
}

/* The files of t loaded and checked: the chain parses, the key parses and
 * is the leaf's, the client CAs parse. */
static int creds_load(const struct tls *t, char *err, size_t err_len, struct creds **ret_creds)
{
        struct creds *c = calloc(1, sizeof *c);
        gnutls_pcert_st chain[CHAIN_MAX];
        unsigned n = CHAIN_MAX;
        gnutls_privkey_t key = NULL;
        gnutls_x509_crt_t leaf = NULL;
        bool chain_ok = false;
        int r, g;

        if (!c)
                return err_set(err, err_len, -ENOMEM, "out of memory");
        atomic_init(&c->refs, 1);
        if ((r = read_file("tls-cert", t->cert, err, err_len, &c->cert)) < 0 ||
            (r = read_file("tls-key", t->key, err, err_len, &c->key)) < 0)
                goto fail;
        if ((g = gnutls_pcert_list_import_x509_raw(chain, &n, &c->cert, GNUTLS_X509_FMT_PEM, 0)) < 0 || n == 0) {
                r = err_set(err, err_len, -EBADMSG, "tls-cert %s: %s", t->cert,
                            g < 0 ? gnutls_strerror(g) : "no certificate");
                goto fail;
        }
        chain_ok = true;
        if ((g = gnutls_privkey_init(&key)) < 0 ||
            (g = gnutls_privkey_import_x509_raw(key, &c->key, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
                r = err_set(err, err_len, -EBADMSG, "tls-key %s: %s", t->key, gnutls_strerror(g));
                goto fail;
        }
        if (!key_matches(key, &chain[0])) {
                r = err_set(err, err_len, -EINVAL, "tls-key %s is not the key of the certificate in tls-cert %s",
                            t->key, t->cert);
                goto fail;
        }
        if (gnutls_pcert_export_x509(&chain[0], &leaf) == 0)
                c->not_after = (int64_t)gnutls_x509_crt_get_expiration_time(leaf);
        if (t->client_ca) {
                gnutls_datum_t ca = { 0 };
                if ((r = read_file("tls-client-ca", t->client_ca, err, err_len, &ca)) < 0)
                        goto fail;
                g = gnutls_x509_trust_list_init(&c->ca, 0);
                if (g == 0)
                        g = gnutls_x509_trust_list_add_trust_mem(c->ca, &ca, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
                free(ca.data);
                if (g <= 0) {
                        r = err_set(err, err_len, -EBADMSG, "tls-client-ca %s: %s", t->client_ca,
                                    g < 0 ? gnutls_strerror(g) : "no certificate");
                        goto fail;
                }
        }
        r = 0;
        *ret_creds = c;
        c = NULL;
fail:
        if (leaf)
                gnutls_x509_crt_deinit(leaf);
        if (key)
                gnutls_privkey_deinit(key);
        if (chain_ok)
                pcerts_deinit(chain, n);
        creds_put(c);
        return r;
}

/* Client certificates: the chain the client sent must lead to a client CA
 * and be meant for TLS clients. Runs in the handshake; non-zero fails it. */
static int verify_client(gnutls_session_t session)
{
        unsigned n = 0, status = 1;
        const gnutls_datum_t *peers = gnutls_certificate_get_peers(session, &n);
        gnutls_x509_crt_t crts[CHAIN_MAX] = { 0 };
        unsigned got = 0;
        struct creds *c = creds_get();

        if (c && c->ca && peers && n > 0 && n <= CHAIN_MAX) {
                bool imported = true;
                for (got = 0; imported && got < n; got++) {
                        if (gnutls_x509_crt_init(&crts[got]) < 0) {
                                imported = false;
                                break;   /* crts[got] is not one to deinit */
                        }
                        imported = gnutls_x509_crt_import(crts[got], &peers[got], GNUTLS_X509_FMT_DER) == 0;
                }
                if (imported) {
                        gnutls_typed_vdata_st purpose = { .type = GNUTLS_DT_KEY_PURPOSE_OID,
                                                          .data = (void *)GNUTLS_KP_TLS_WWW_CLIENT };
                        if (gnutls_x509_trust_list_verify_crt2(c->ca, crts, n, &purpose, 1, 0, &status, NULL) < 0)
                                status = 1;
                }
                for (unsigned i = 0; i < got; i++)
                        gnutls_x509_crt_deinit(crts[i]);
        }
        if (status != 0) {
                pthread_mutex_lock(&tls_lock);
                if (tls_owner)
                        atomic_fetch_add(&tls_owner->refused, 1);
                pthread_mutex_unlock(&tls_lock);
        }
        creds_put(c);
        return status == 0 ? 0 : GNUTLS_E_CERTIFICATE_ERROR;
}

/* GnuTLS asks for the server's certificate: copies of the current chain
 * and key, GnuTLS's to free (DEINIT_ALL). With client CAs, the session
 * requires a client certificate and verifies it (verify_client). */
static int retrieve(gnutls_session_t session, const struct gnutls_cert_retr_st *info, gnutls_pcert_st **ret_certs,
                    unsigned int *ret_n, gnutls_ocsp_data_st **ret_ocsp, unsigned int *ret_nocsp,
                    gnutls_privkey_t *ret_key, unsigned int *ret_flags)
{
        struct creds *c = creds_get();
        gnutls_pcert_st *certs = NULL;
        gnutls_privkey_t key = NULL;
        unsigned n = CHAIN_MAX;
        int r = -1;

        (void)info;
        if (!c)
                return -1;
        if (!(certs = gnutls_malloc(CHAIN_MAX * sizeof *certs)))
                goto out;
        if (gnutls_pcert_list_import_x509_raw(certs, &n, &c->cert, GNUTLS_X509_FMT_PEM, 0) < 0)
                goto out;
        if (gnutls_privkey_init(&key) < 0 || gnutls_privkey_import_x509_raw(key, &c->key, GNUTLS_X509_FMT_PEM, NULL, 0) < 0) {
                pcerts_deinit(certs, n);
                goto out;
        }
        if (c->ca) {
                gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
                gnutls_session_set_verify_function(session, verify_client);
        }
        *ret_certs = certs;
        *ret_n = n;
        *ret_ocsp = NULL;
        *ret_nocsp = 0;
        *ret_key = key;
        *ret_flags = GNUTLS_CERT_RETR_DEINIT_ALL;
        certs = NULL;
        key = NULL;
        r = 0;
        pthread_mutex_lock(&tls_lock);
        if (tls_owner)
                atomic_fetch_add(&tls_owner->handshakes, 1);
        pthread_mutex_unlock(&tls_lock);
out:
        if (key)
                gnutls_privkey_deinit(key);
        gnutls_free(certs);
        creds_put(c);
        return r;
}

int tls_new(const struct tls_opts *opts, char *err, size_t err_len, struct tls **ret_tls)
{
        struct tls *t = calloc(1, sizeof *t);
        struct creds *c = NULL;
        int r;

        if (!t || !(t->cert = strdup(opts->cert)) || !(t->key = strdup(opts->key)) ||
            (opts->client_ca && !(t->client_ca = strdup(opts->client_ca)))) {
                r = err_set(err, err_len, -ENOMEM, "out of memory");
                goto fail;
        }
        if ((r = creds_load(t, err, err_len, &c)) < 0)
                goto fail;
        if (gnutls_certificate_allocate_credentials(&t->cred) < 0 ||
            gnutls_priority_init(&t->prio, tls_priorities(), NULL) < 0) {
                r = err_set(err, err_len, -ENOMEM, "GnuTLS: cannot set up credentials");
                goto fail;
        }
        gnutls_certificate_set_retrieve_function3(t->cred, retrieve);
        pthread_mutex_lock(&tls_lock);
        if (tls_owner) {
                pthread_mutex_unlock(&tls_lock);
                r = err_set(err, err_len, -EBUSY, "TLS credentials are set up already");
                goto fail;
        }
        tls_owner = t;
        tls_current = c;
        pthread_mutex_unlock(&tls_lock);
        *ret_tls = t;
        return 0;
fail:
        creds_put(c);
        if (t) {
                if (t->cred)
                        gnutls_certificate_free_credentials(t->cred);
                if (t->prio)
                        gnutls_priority_deinit(t->prio);
                free(t->cert);
                free(t->key);
                free(t->client_ca);
        }
        free(t);
        return r;
}

int tls_reload(struct tls *t, char *err, size_t err_len)
{
        struct creds *c = NULL, *old;
        int r;

        if ((r = creds_load(t, err, err_len, &c)) < 0) {
                atomic_fetch_add(&t->reload_failures, 1);
                return r;
        }
        pthread_mutex_lock(&tls_lock);
        old = tls_current;
        tls_current = c;
        pthread_mutex_unlock(&tls_lock);
        creds_put(old);
        atomic_fetch_add(&t->reloads, 1);
        return 0;
}

const char *tls_priorities(void)
{
        return "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
}

tls_callback tls_cert_callback(const struct tls *t)
{
        gnutls_certificate_retrieve_function3 *f = retrieve;

        (void)t;
        return (tls_callback)f;
}

void tls_stats_snapshot(struct tls *t, struct tls_stats *ret_stats)
{
        struct creds *c = creds_get();

        *ret_stats = (struct tls_stats){
                .handshakes = atomic_load(&t->handshakes),
                .client_cert_refused = atomic_load(&t->refused),
                .reloads = atomic_load(&t->reloads),
                .reload_failures = atomic_load(&t->reload_failures),
                .not_after = c ? c->not_after : 0,
        };
        creds_put(c);
}

struct tls *tls_free(struct tls *t)
{
        struct creds *c = NULL;

        if (!t)
                return NULL;
        pthread_mutex_lock(&tls_lock);
        if (tls_owner == t) {
                c = tls_current;
                tls_current = NULL;
                tls_owner = NULL;
        }
        pthread_mutex_unlock(&tls_lock);
        creds_put(c);
        gnutls_certificate_free_credentials(t->cred);
        gnutls_priority_deinit(t->prio);
        free(t->cert);
        free(t->key);
        free(t->client_ca);
        free(t);
        return NULL;
}

int tls_conn_new(struct tls *t, int fd, const char *const *alpn, struct tls_conn **ret_conn)
{
        struct tls_conn *c = calloc(1, sizeof *c);
        gnutls_datum_t protos[8];
        unsigned n = 0;

        if (!c)
                return -ENOMEM;
        if (gnutls_init(&c->session, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL) < 0) {
                free(c);
                return -ENOMEM;
        }
        for (; alpn && alpn[n] && n < 8; n++)
                protos[n] = (gnutls_datum_t){ .data = (unsigned char *)alpn[n], .size = (unsigned)strlen(alpn[n]) };
        if (gnutls_priority_set(c->session, t->prio) < 0 ||
            gnutls_credentials_set(c->session, GNUTLS_CRD_CERTIFICATE, t->cred) < 0 ||
            (n > 0 && gnutls_alpn_set_protocols(c->session, protos, n, GNUTLS_ALPN_MANDATORY) < 0)) {
                tls_conn_free(c);
                return -EIO;
        }
        /* The caller's event loop bounds the time a handshake may take. */
        gnutls_handshake_set_timeout(c->session, 0);
        gnutls_transport_set_int(c->session, fd);
        c->alpn = n > 0;
        *ret_conn = c;
        return 0;
}

/* Our code for a GnuTLS error of record I/O or the handshake. */
static int conn_error(int g)
{
        switch (g) {
        case GNUTLS_E_AGAIN:
        case GNUTLS_E_INTERRUPTED:
                return -EAGAIN;
        case GNUTLS_E_PREMATURE_TERMINATION:
        case GNUTLS_E_PULL_ERROR:
                return -ECONNRESET;
        case GNUTLS_E_PUSH_ERROR:
                return -EPIPE;
        default:
                return gnutls_error_is_fatal(g) ? -EPROTO : -EAGAIN;
        }
}

int tls_conn_handshake(struct tls_conn *c)
{
        gnutls_datum_t p;
        int g = gnutls_handshake(c->session);

        if (g != 0)
                return conn_error(g);
        /* GnuTLS's "mandatory" refuses a client whose protocols do not
         * match, not one that names none: refused here. */
        if (c->alpn && gnutls_alpn_get_selected_protocol(c->session, &p) != 0)
                return -EPROTO;
        return 0;
}

ssize_t tls_conn_recv(struct tls_conn *c, void *buf, size_t len)
{
        ssize_t n = gnutls_record_recv(c->session, buf, len);

        return n >= 0 ? n : conn_error((int)n);
}

ssize_t tls_conn_send(struct tls_conn *c, const void *buf, size_t len)
{
        ssize_t n = gnutls_record_send(c->session, buf, len);

        return n >= 0 ? n : conn_error((int)n);
}

int tls_conn_bye(struct tls_conn *c)
{
        /* SHUT_WR: the alert goes out and the peer's answer is not
         * awaited, so one call is all a closing connection spends. */
        int g = gnutls_bye(c->session, GNUTLS_SHUT_WR);

        return g == 0 ? 0 : conn_error(g);
}

bool tls_conn_want_write(const struct tls_conn *c)
{
        return gnutls_record_get_direction(c->session) == 1;
}

size_t tls_conn_pending(const struct tls_conn *c)
{
        return gnutls_record_check_pending(c->session);
}

void tls_conn_alpn(const struct tls_conn *c, char *buf, size_t len)
{
        gnutls_datum_t p = { 0 };

        if (len == 0)
                return;
        buf[0] = '\0';
        if (gnutls_alpn_get_selected_protocol(c->session, &p) == 0 && p.size < len) {
                memcpy(buf, p.data, p.size);
                buf[p.size] = '\0';
        }
}

struct tls_conn *tls_conn_free(struct tls_conn *c)
{
        if (!c)
                return NULL;
        if (c->session)
                gnutls_deinit(c->session);
        free(c);
        return NULL;
}

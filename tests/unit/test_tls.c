/* Unit tests of the TLS credentials (server/tls.h) through struct tls_conn,
 * on a socket pair: a GnuTLS client (blocking, on a thread) against the
 * module's non-blocking server side. Certificates are made with openssl
 * (skipped without it). */
#include "check.h"
#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

static char dir[] = "/tmp/effnet-test-tls-XXXXXX";

static char *path(const char *name)
{
        static char buf[8][256];
        static int i;
        char *p = buf[i++ % 8];
        snprintf(p, 256, "%s/%s", dir, name);
        return p;
}

static int sh(const char *fmt, const char *a)
{
        char cmd[2048];
        snprintf(cmd, sizeof cmd, fmt, a, a, a, a, a, a, a, a);
        return system(cmd);
}

/* A CA, server certificates a and b, a client CA and its client. */
static bool make_pki(void)
{
        static const char *cmds[] = {
                "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key "
                "-out ca.crt -days 2 -subj /CN=ca >/dev/null 2>&1",
                "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout cca.key "
                "-out cca.crt -days 2 -subj /CN=cca >/dev/null 2>&1",
                "cd %s && for n in a b; do openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                "-keyout $n.key -out $n.csr -subj /CN=localhost >/dev/null 2>&1 && openssl x509 -req -in $n.csr "
                "-CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt -days 2 >/dev/null 2>&1 || exit 1; done",
                "cd %s && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout cl.key -out "
                "cl.csr -subj /CN=client >/dev/null 2>&1 && openssl x509 -req -in cl.csr -CA cca.crt -CAkey cca.key "
                "-CAcreateserial -out cl.crt -days 2 >/dev/null 2>&1",
        };
        for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
                if (sh(cmds[i], dir) != 0)
                        return false;
        return true;
}

struct client {
        int fd;
        const char *priority;       /* NULL: the default */
        bool alpn;                  /* offer h2 */
        bool cert;                  /* present cl.crt */
        /* results */
        int handshake;              /* gnutls code */
        char answer[16];
        char alpn_got[16];
        gnutls_datum_t peer;        /* the server's certificate, DER (gnutls_free) */
};

static void *client_main(void *arg)
{
        struct client *cl = arg;
        gnutls_session_t s;
        gnutls_certificate_credentials_t cred;

        gnutls_certificate_allocate_credentials(&cred);
        gnutls_certificate_set_x509_trust_file(cred, path("ca.crt"), GNUTLS_X509_FMT_PEM);
        if (cl->cert)
                gnutls_certificate_set_x509_key_file(cred, path("cl.crt"), path("cl.key"), GNUTLS_X509_FMT_PEM);
        gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL);
        if (cl->priority)
                gnutls_priority_set_direct(s, cl->priority, NULL);
        else
                gnutls_set_default_priority(s);
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
        gnutls_session_set_verify_cert(s, "localhost", 0);
        if (cl->alpn) {
                gnutls_datum_t h2 = { .data = (unsigned char *)"h2", .size = 2 };
                gnutls_alpn_set_protocols(s, &h2, 1, 0);
        }
        gnutls_transport_set_int(s, cl->fd);
        gnutls_handshake_set_timeout(s, 10000);
        do
                cl->handshake = gnutls_handshake(s);
        while (cl->handshake < 0 && !gnutls_error_is_fatal(cl->handshake));
        if (cl->handshake == 0) {
                gnutls_datum_t p;
                unsigned n = 0;
                const gnutls_datum_t *peers = gnutls_certificate_get_peers(s, &n);
                if (peers && n > 0) {
                        cl->peer.data = gnutls_malloc(peers[0].size);
                        memcpy(cl->peer.data, peers[0].data, peers[0].size);
                        cl->peer.size = peers[0].size;
                }
                if (gnutls_alpn_get_selected_protocol(s, &p) == 0 && p.size < sizeof cl->alpn_got)
                        memcpy(cl->alpn_got, p.data, p.size);
                gnutls_record_send(s, "ping", 4);
                ssize_t got = gnutls_record_recv(s, cl->answer, sizeof cl->answer - 1);
                if (got > 0)
                        cl->answer[got] = '\0';
                gnutls_bye(s, GNUTLS_SHUT_WR);
        }
        shutdown(cl->fd, SHUT_WR);
        gnutls_deinit(s);
        gnutls_certificate_free_credentials(cred);
        return NULL;
}

static void wait_for(int fd, struct tls_conn *c)
{
        struct pollfd p = { .fd = fd, .events = tls_conn_want_write(c) ? POLLOUT : POLLIN };
        poll(&p, 1, 10000);
}

/* One connection: the client on a thread, the server side here. Returns
 * the server's handshake code; *ret_client has the client's view. */
static int serve_one(struct tls *t, struct client *cl)
{
        static const char *const alpn[] = { "h2", NULL };
        int sv[2];
        pthread_t th;
        struct tls_conn *c = NULL;
        int r;

        REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        REQUIRE(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
        cl->fd = sv[1];
        REQUIRE(pthread_create(&th, NULL, client_main, cl) == 0);
        CHECK_EQ(tls_conn_new(t, sv[0], alpn, &c), 0);
        while ((r = tls_conn_handshake(c)) == -EAGAIN)
                wait_for(sv[0], c);
        if (r == 0) {
                char buf[16], proto[16];
                ssize_t n;
                while ((n = tls_conn_recv(c, buf, sizeof buf)) == -EAGAIN)
                        wait_for(sv[0], c);
                CHECK_EQ(n, 4);
                CHECK(n == 4 && memcmp(buf, "ping", 4) == 0);
                tls_conn_alpn(c, proto, sizeof proto);
                CHECK(strcmp(proto, "h2") == 0);
                CHECK_EQ(tls_conn_pending(c), 0);
                while ((n = tls_conn_send(c, "pong", 4)) == -EAGAIN)
                        wait_for(sv[0], c);
                CHECK_EQ(n, 4);
                while ((n = tls_conn_recv(c, buf, sizeof buf)) == -EAGAIN)
                        wait_for(sv[0], c);
                CHECK_EQ(n, 0);   /* the client's close_notify */
        } else {
                shutdown(sv[0], SHUT_RDWR);   /* as a server closes a refused connection */
        }
        pthread_join(th, NULL);
        tls_conn_free(c);
        close(sv[0]);
        close(sv[1]);
        return r;
}

static bool same_cert(const gnutls_datum_t *der, const char *pem_path)
{
        gnutls_datum_t pem = { 0 }, d = { 0 };
        gnutls_x509_crt_t crt;
        bool same = false;

        if (gnutls_load_file(pem_path, &pem) < 0)
                return false;
        gnutls_x509_crt_init(&crt);
        if (gnutls_x509_crt_import(crt, &pem, GNUTLS_X509_FMT_PEM) == 0 &&
            gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &d) == 0)
                same = d.size == der->size && memcmp(d.data, der->data, d.size) == 0;
        gnutls_free(d.data);
        gnutls_free(pem.data);
        gnutls_x509_crt_deinit(crt);
        return same;
}

static void copy(const char *from, const char *to)
{
        char cmd[600];
        snprintf(cmd, sizeof cmd, "cp %s %s", from, to);
        REQUIRE(system(cmd) == 0);
}

int main(void)
{
        struct tls *t = NULL, *t2 = NULL;
        struct tls_stats st;
        char err[512];

        if (system("openssl version >/dev/null 2>&1") != 0) {
                printf("SKIP: no openssl\n");
                return 77;
        }
        REQUIRE(mkdtemp(dir));
        REQUIRE(make_pki());
        copy(path("a.crt"), path("srv.crt"));
        copy(path("a.key"), path("srv.key"));

        /* Files that do not load: named. */
        struct tls_opts bad = { .cert = path("srv.crt"), .key = path("b.key") };
        CHECK_EQ(tls_new(&bad, err, sizeof err, &t), -EINVAL);
        CHECK_CONTAINS(err, "is not the key of the certificate");
        bad = (struct tls_opts){ .cert = path("nonexistent.crt"), .key = path("a.key") };
        CHECK_EQ(tls_new(&bad, err, sizeof err, &t), -ENOENT);
        CHECK_CONTAINS(err, "nonexistent.crt");
        bad = (struct tls_opts){ .cert = path("a.key"), .key = path("a.key") };
        CHECK_EQ(tls_new(&bad, err, sizeof err, &t), -EBADMSG);
        CHECK_CONTAINS(err, "tls-cert");

        struct tls_opts o = { .cert = path("srv.crt"), .key = path("srv.key") };
        REQUIRE(tls_new(&o, err, sizeof err, &t) == 0);
        CHECK_EQ(tls_new(&o, err, sizeof err, &t2), -EBUSY);   /* one at a time */

        /* TLS 1.3 and 1.2 with ALPN h2; certificate a. */
        struct client c13 = { .alpn = true, .priority = "NORMAL:-VERS-ALL:+VERS-TLS1.3" };
        CHECK_EQ(serve_one(t, &c13), 0);
        CHECK_EQ(c13.handshake, 0);
        CHECK(strcmp(c13.answer, "pong") == 0 && strcmp(c13.alpn_got, "h2") == 0);
        CHECK(same_cert(&c13.peer, path("a.crt")));
        gnutls_free(c13.peer.data);
        struct client c12 = { .alpn = true, .priority = "NORMAL:-VERS-ALL:+VERS-TLS1.2" };
        CHECK_EQ(serve_one(t, &c12), 0);
        CHECK(strcmp(c12.answer, "pong") == 0);
        gnutls_free(c12.peer.data);

        /* TLS 1.1 and a client without ALPN are refused. */
        struct client c11 = { .alpn = true, .priority = "NORMAL:-VERS-ALL:+VERS-TLS1.1" };
        CHECK_EQ(serve_one(t, &c11), -EPROTO);
        CHECK(c11.handshake < 0);
        gnutls_free(c11.peer.data);
        struct client noalpn = { .alpn = false };
        CHECK_EQ(serve_one(t, &noalpn), -EPROTO);
        CHECK(noalpn.answer[0] == '\0');   /* nothing served to it */
        gnutls_free(noalpn.peer.data);

        /* Reload: b for new handshakes; a bad reload keeps b. */
        copy(path("b.crt"), path("srv.crt"));
        copy(path("b.key"), path("srv.key"));
        CHECK_EQ(tls_reload(t, err, sizeof err), 0);
        struct client cb = { .alpn = true };
        CHECK_EQ(serve_one(t, &cb), 0);
        CHECK(same_cert(&cb.peer, path("b.crt")));
        gnutls_free(cb.peer.data);
        copy(path("a.key"), path("srv.key"));
        CHECK_EQ(tls_reload(t, err, sizeof err), -EINVAL);
        struct client cb2 = { .alpn = true };
        CHECK_EQ(serve_one(t, &cb2), 0);
        CHECK(same_cert(&cb2.peer, path("b.crt")));
        gnutls_free(cb2.peer.data);
        tls_stats_snapshot(t, &st);
        CHECK_EQ(st.reloads, 1);
        CHECK_EQ(st.reload_failures, 1);
        CHECK(st.not_after > time(NULL));
        CHECK(st.handshakes >= 4);
        t = tls_free(t);

        /* Mutual TLS: the client CA's client only. */
        copy(path("b.key"), path("srv.key"));
        o.client_ca = path("cca.crt");
        REQUIRE(tls_new(&o, err, sizeof err, &t) == 0);
        struct client anon = { .alpn = true };
        CHECK_EQ(serve_one(t, &anon), -EPROTO);
        gnutls_free(anon.peer.data);
        struct client mine = { .alpn = true, .cert = true };
        CHECK_EQ(serve_one(t, &mine), 0);
        CHECK(strcmp(mine.answer, "pong") == 0);
        gnutls_free(mine.peer.data);
        t = tls_free(t);
        CHECK(tls_free(NULL) == NULL && tls_conn_free(NULL) == NULL);

        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        system(cmd);
        return CHECK_DONE();
}

/* Unit tests of the Host policy (server/hosts.h). */
#include "check.h"
#include "hosts.h"

#include <errno.h>

static struct hosts *policy(const char *list, bool loopback_only)
{
        struct hosts *h = NULL;
        char err[256] = "";
        int r = hosts_new(list, loopback_only, err, sizeof err, &h);

        CHECK_MSG(r == 0, "hosts_new(%s): %d %s", list ? list : "NULL", r, err);
        REQUIRE(h);
        return h;
}

static void loopback_default(void)
{
        struct hosts *h = policy(NULL, true);
        const char *yes[] = { "localhost", "localhost:8080", "LocalHost.", "localhost.:80", "app.localhost:1",
                              "127.0.0.1", "127.0.0.1:8080", "127.1.2.3:9", "[::1]", "[::1]:8080",
                              "[::ffff:127.0.0.1]:80" };
        const char *no[] = { "rebind.example", "rebind.example:8080", "localhost.example", "evil-localhost",
                             "127.0.0.1.example", "10.0.0.1", "10.0.0.1:8080", "[::2]:80", "[fe80::1]", "", ":80",
                             "::1", "[::1", "[::1]x", "localhost:80:80", "localhost:8o", "0.0.0.0", "127.1",
                             "0x7f.0.0.1" };

        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
                CHECK_MSG(hosts_allow(h, yes[i]), "loopback-only accepts %s", yes[i]);
        for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
                CHECK_MSG(!hosts_allow(h, no[i]), "loopback-only refuses '%s'", no[i]);
        CHECK_MSG(hosts_allow(h, NULL), "no Host (HTTP/1.0) is answered");
        CHECK_CONTAINS(hosts_describe(h), "loopback");
        hosts_free(h);
}

static void other_binds(void)
{
        /* Listening beyond loopback without a list: any Host. */
        struct hosts *h = policy(NULL, false);
        CHECK(hosts_allow(h, "rebind.example"));
        CHECK(hosts_allow(h, "10.0.0.1:8080"));
        hosts_free(h);
        h = policy("", false);
        CHECK(hosts_allow(h, "anything.example"));
        hosts_free(h);

        /* "*": any, also on loopback. */
        h = policy("*", true);
        CHECK(hosts_allow(h, "rebind.example:8080"));
        hosts_free(h);

        /* A list: its names, loopback and IP literals (probes send the pod's address). */
        h = policy("api.example.com, .internal.example\tOTHER.example.", false);
        const char *yes[] = { "api.example.com", "API.Example.Com:443", "api.example.com.", "internal.example",
                              "a.internal.example:8080", "b.a.internal.example", "other.example",
                              "localhost:8080", "127.0.0.1", "10.244.1.7:8080", "[2001:db8::1]:8080" };
        const char *no[] = { "rebind.example", "example.com", "xapi.example.com", "api.example.com.evil",
                             "xinternal.example", "other.example.org", "[not-an-address]" };
        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
                CHECK_MSG(hosts_allow(h, yes[i]), "the list accepts %s", yes[i]);
        for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
                CHECK_MSG(!hosts_allow(h, no[i]), "the list refuses %s", no[i]);
        hosts_free(h);
}

static void bad_lists(void)
{
        const char *bad[] = { "api.example.com:8080", "http://api.example.com", "a b/c", "[::1]", "." };
        char err[256];

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct hosts *h = NULL;
                err[0] = '\0';
                CHECK_EQ(hosts_new(bad[i], true, err, sizeof err, &h), -EINVAL);
                CHECK(h == NULL);
                CHECK_CONTAINS(err, "allowed-hosts");
        }
        char many[HOSTS_MAX_NAMES * 4 + 8] = "";
        for (int i = 0; i <= HOSTS_MAX_NAMES; i++)
                strcat(many, "a,");
        struct hosts *h = NULL;
        CHECK_EQ(hosts_new(many, true, err, sizeof err, &h), -EINVAL);
        CHECK_CONTAINS(err, "more than");
        hosts_free(NULL);
}

int main(void)
{
        loopback_default();
        other_binds();
        bad_lists();
        return CHECK_DONE();
}

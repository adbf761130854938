/* Unit tests of API keys (server/auth.h): the key file's parser, the
 * Bearer credentials, matching, reload and the counters. */
#include "check.h"
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#define ABC_SHA256 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define KEY2_SHA256 "7c36b0a9dedde119c75165957c6c9c187e65df1ee5db87c4c58ad503ad88cbe3"

static int parse(const char *text, char *err, size_t err_len, int *ret_count)
{
        struct auth_keys *k = NULL;
        int r = auth_keys_parse(text, strlen(text), err, err_len, &k);

        if (r == 0) {
                *ret_count = auth_keys_count(k);
                auth_keys_free(k);
        }
        return r;
}

static void hash(void)
{
        char hex[2 * AUTH_DIGEST_LEN + 1];

        CHECK_EQ(auth_hash_key("abc", 3, hex), 0);
        CHECK_MSG(strcmp(hex, ABC_SHA256) == 0, "sha256(abc) = %s", hex);
        CHECK_EQ(auth_hash_key("key-2", 5, hex), 0);
        CHECK_MSG(strcmp(hex, KEY2_SHA256) == 0, "sha256(key-2) = %s", hex);
}

static void file_format(void)
{
        char err[256];
        int n = -1;

        CHECK_EQ(parse(ABC_SHA256 "\n", err, sizeof err, &n), 0);
        CHECK_EQ(n, 1);
        /* Comments, blank lines, CRLF, upper case, a trailing comment, no final newline. */
        CHECK_EQ(parse("# keys\n\n   \t\n" ABC_SHA256 "\r\n  " "7C36B0A9DEDDE119C75165957C6C9C187E65DF1EE5DB87C4C58AD503AD88CBE3"
                       "  # ci\n# end", err, sizeof err, &n), 0);
        CHECK_EQ(n, 2);

        struct {
                const char *text;
                int r;
                const char *line;
        } bad[] = {
                { "", -EINVAL, "no key" },
                { "# only a comment\n\n", -EINVAL, "no key" },
                { ABC_SHA256 "\nmy-secret-key\n", -EBADMSG, "line 2" },
                { ABC_SHA256 "0\n", -EBADMSG, "line 1" },
                { "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a\n", -EBADMSG, "line 1" },
                { "ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n", -EBADMSG, "line 1" },
                { ABC_SHA256 " extra\n", -EBADMSG, "line 1" },
                { ABC_SHA256 "#no blank before the comment\n", -EBADMSG, "line 1" },
                { "\n\n\n" ABC_SHA256 " " ABC_SHA256 "\n", -EBADMSG, "line 4" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                err[0] = '\0';
                int r = parse(bad[i].text, err, sizeof err, &n);
                CHECK_MSG(r == bad[i].r, "case %zu: %d, want %d (%s)", i, r, bad[i].r, err);
                CHECK_CONTAINS(err, bad[i].line);
        }
        /* The message never repeats the line: it may hold a key pasted by mistake. */
        parse("my-secret-key\n", err, sizeof err, &n);
        CHECK(strstr(err, "my-secret") == NULL);

        /* A NUL inside. */
        struct auth_keys *k = NULL;
        const char nul[] = ABC_SHA256 "\n\0" ABC_SHA256 "\n";
        CHECK_EQ(auth_keys_parse(nul, sizeof nul - 1, err, sizeof err, &k), -EBADMSG);
        CHECK_CONTAINS(err, "line 2");

        /* At most AUTH_MAX_KEYS keys; one more is refused. */
        size_t len = (size_t)(AUTH_MAX_KEYS + 1) * 65;
        char *many = malloc(len + 1);
        REQUIRE(many);
        for (int i = 0; i <= AUTH_MAX_KEYS; i++)
                memcpy(many + (size_t)i * 65, ABC_SHA256 "\n", 65);
        CHECK_EQ(auth_keys_parse(many, len - 65, err, sizeof err, &k), 0);
        CHECK_EQ(auth_keys_count(k), AUTH_MAX_KEYS);
        k = auth_keys_free(k);
        CHECK_EQ(auth_keys_parse(many, len, err, sizeof err, &k), -E2BIG);
        free(many);
        CHECK(auth_keys_free(NULL) == NULL);
}

static void matching(void)
{
        struct auth_keys *k = NULL;
        char err[256];
        const char *text = ABC_SHA256 "\n" KEY2_SHA256 "\n";

        REQUIRE(auth_keys_parse(text, strlen(text), err, sizeof err, &k) == 0);
        CHECK(auth_keys_match(k, "abc", 3));
        CHECK(auth_keys_match(k, "key-2", 5));
        CHECK(!auth_keys_match(k, "ab", 2));
        CHECK(!auth_keys_match(k, "abcd", 4));
        CHECK(!auth_keys_match(k, "ABC", 3));
        CHECK(!auth_keys_match(k, "", 0));
        auth_keys_free(k);
}

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs(text, f);
        fclose(f);
}

static void bearer_and_reload(void)
{
        char path[] = "/tmp/effnet-test-auth-XXXXXX", err[512];
        int fd = mkstemp(path);
        struct auth *a = NULL;
        struct auth_stats st;

        REQUIRE(fd >= 0);
        close(fd);
        write_file(path, ABC_SHA256 "\n");
        CHECK_EQ(auth_new("/nonexistent/keys", err, sizeof err, &a), -ENOENT);
        CHECK_CONTAINS(err, "/nonexistent/keys");
        REQUIRE(auth_new(path, err, sizeof err, &a) == 0);

        CHECK_EQ(auth_check(a, "Bearer abc"), AUTH_OK);
        CHECK_EQ(auth_check(a, "bearer abc"), AUTH_OK);
        CHECK_EQ(auth_check(a, "BEARER \tabc  "), AUTH_OK);
        CHECK_EQ(auth_check(a, NULL), AUTH_MISSING);
        CHECK_EQ(auth_check(a, ""), AUTH_MALFORMED);
        CHECK_EQ(auth_check(a, "Bearer"), AUTH_MALFORMED);
        CHECK_EQ(auth_check(a, "Bearer "), AUTH_MALFORMED);
        CHECK_EQ(auth_check(a, "Bearerabc"), AUTH_MALFORMED);
        CHECK_EQ(auth_check(a, "Basic YWJj"), AUTH_MALFORMED);
        CHECK_EQ(auth_check(a, "Bearer abc def"), AUTH_MALFORMED);
        CHECK_EQ(auth_check(a, "Bearer ab\x01"), AUTH_MALFORMED);
        CHECK_EQ(auth_check(a, "Bearer abd"), AUTH_INVALID);
        CHECK_EQ(auth_check(a, "Bearer " ABC_SHA256), AUTH_INVALID);   /* the digest is not the key */
        char *longkey = malloc(AUTH_MAX_KEY_LEN + 16);
        REQUIRE(longkey);
        memcpy(longkey, "Bearer ", 7);
        memset(longkey + 7, 'k', AUTH_MAX_KEY_LEN + 1);
        longkey[7 + AUTH_MAX_KEY_LEN + 1] = '\0';
        CHECK_EQ(auth_check(a, longkey), AUTH_MALFORMED);
        free(longkey);

        auth_stats_snapshot(a, &st);
        CHECK_EQ(st.failures[AUTH_OK], 0);
        CHECK_EQ(st.failures[AUTH_MISSING], 1);
        CHECK_EQ(st.failures[AUTH_MALFORMED], 8);
        CHECK_EQ(st.failures[AUTH_INVALID], 2);
        CHECK_EQ(st.keys, 1);

        /* Rotation: key-2 replaces abc. */
        write_file(path, "# rotated\n" KEY2_SHA256 "\n");
        CHECK_EQ(auth_reload(a, err, sizeof err), 0);
        CHECK_EQ(auth_check(a, "Bearer key-2"), AUTH_OK);
        CHECK_EQ(auth_check(a, "Bearer abc"), AUTH_INVALID);
        /* A broken file, then none: the keys in use stay. */
        write_file(path, KEY2_SHA256 "\nkey-3\n");
        CHECK_EQ(auth_reload(a, err, sizeof err), -EBADMSG);
        CHECK_CONTAINS(err, "line 2");
        CHECK(strstr(err, "key-3") == NULL);
        unlink(path);
        CHECK_EQ(auth_reload(a, err, sizeof err), -ENOENT);
        CHECK_EQ(auth_check(a, "Bearer key-2"), AUTH_OK);
        auth_stats_snapshot(a, &st);
        CHECK_EQ(st.reloads, 1);
        CHECK_EQ(st.reload_failures, 2);
        a = auth_free(a);
        CHECK(a == NULL);
        CHECK(auth_free(NULL) == NULL);
        CHECK(strcmp(auth_verdict_name(AUTH_INVALID), "invalid") == 0);
}

int main(void)
{
        hash();
        file_format();
        matching();
        bearer_and_reload();
        return CHECK_DONE();
}

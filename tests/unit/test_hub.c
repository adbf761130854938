/* Unit test of the hub module (src/hub/hub.c) without a network: hf:// and
 * repository id parsing, the settings as huggingface_hub resolves them from
 * the environment, and cache look-ups in a hand-made cache. The downloads
 * themselves are tested against a stand-in hub in tests/integration. */
#include "hub.h"
#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const hub_env[] = { "HF_ENDPOINT", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_CACHE",
                                       "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                                       "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                       "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT", "REQUESTS_CA_BUNDLE",
                                       "CURL_CA_BUNDLE" };

static void clear_env(void)
{
        for (size_t i = 0; i < sizeof hub_env / sizeof hub_env[0]; i++)
                unsetenv(hub_env[i]);
}

static void test_parse(void)
{
        struct hub_ref ref;
        char err[256];

        REQUIRE(hub_parse_uri("hf://timm/tf_efficientnetv2_s.in21k_ft_in1k", err, sizeof err, &ref) == 0);
        CHECK(strcmp(ref.repo, "timm/tf_efficientnetv2_s.in21k_ft_in1k") == 0);
        CHECK(strcmp(ref.revision, "main") == 0);
        CHECK(strcmp(ref.file, "model.safetensors") == 0);

        REQUIRE(hub_parse_uri("hf://timm/x@v1.0/onnx/model.onnx", err, sizeof err, &ref) == 0);
        CHECK(strcmp(ref.repo, "timm/x") == 0);
        CHECK(strcmp(ref.revision, "v1.0") == 0);
        CHECK(strcmp(ref.file, "onnx/model.onnx") == 0);

        /* HfFileSystem's encoding of a revision with '/'. */
        REQUIRE(hub_parse_uri("hf://org/name@refs%2Fpr%2F1", err, sizeof err, &ref) == 0);
        CHECK(strcmp(ref.revision, "refs/pr/1") == 0);
        CHECK(strcmp(ref.file, "model.safetensors") == 0);

        REQUIRE(hub_parse_uri("hf://org/name/sub/weights.safetensors", err, sizeof err, &ref) == 0);
        CHECK(strcmp(ref.revision, "main") == 0);
        CHECK(strcmp(ref.file, "sub/weights.safetensors") == 0);

        char buf[2048];
        hub_ref_format(&ref, buf, sizeof buf);
        CHECK(strcmp(buf, "hf://org/name@main/sub/weights.safetensors") == 0);

        static const char *const bad[] = {
                "timm/x", "hf://", "hf://timm", "hf://timm/", "hf:///x", "hf://timm/x@", "hf://timm/x@/f",
                "hf://timm/x/", "hf://timm/x@main/", "hf://a--b/c", "hf://a/b--c", "hf://a/b..c", "hf://a/b.git",
                "hf://-a/b", "hf://a/b-", "hf://a/b c", "hf://a/b/../../etc/passwd", "hf://a/b/.hidden",
                "hf://a/b/x//y", "hf://a/b@%zz", "hf://a/b@%2", "hf://a/b@..%2F..", "hf://a/b@refs%2F..%2Fx",
                "hf://a/b/x\\y", "hf://datasets/a/b", "hf://spaces/a/b", "hf://a/b/c\x01",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                err[0] = '\0';
                CHECK_MSG(hub_parse_uri(bad[i], err, sizeof err, &ref) == -EINVAL, "%s", bad[i]);
                CHECK_MSG(err[0] != '\0', "no message for %s", bad[i]);
        }
        char long_id[200];
        memset(long_id, 'a', sizeof long_id);
        memcpy(long_id, "hf://o/", 7);
        long_id[sizeof long_id - 1] = '\0';
        CHECK(hub_parse_uri(long_id, err, sizeof err, &ref) == -EINVAL);

        CHECK(hub_is_uri("hf://a/b"));
        CHECK(!hub_is_uri("/tmp/hf://x"));
        CHECK(!hub_is_uri(NULL));
}

static void test_ref_init(void)
{
        struct hub_ref ref;
        char err[256];

        CHECK(hub_ref_init("gpt2", NULL, NULL, err, sizeof err, &ref) == 0);   /* no ORG, as the hub allows */
        CHECK(hub_ref_init("timm/x", "refs/pr/1", "a/b.json", err, sizeof err, &ref) == 0);
        CHECK(strcmp(ref.revision, "refs/pr/1") == 0);
        CHECK(hub_ref_init("a/b/c", NULL, NULL, err, sizeof err, &ref) == -EINVAL);
        CHECK(hub_ref_init("", NULL, NULL, err, sizeof err, &ref) == -EINVAL);
        CHECK(hub_ref_init("a/b", "..", NULL, err, sizeof err, &ref) == -EINVAL);
        CHECK(hub_ref_init("a/b", "/main", NULL, err, sizeof err, &ref) == -EINVAL);
        CHECK(hub_ref_init("a/b", NULL, "/etc/passwd", err, sizeof err, &ref) == -EINVAL);
        CHECK(hub_ref_init("a/b", NULL, "", err, sizeof err, &ref) == -EINVAL);
}

static void test_settings(const char *dir)
{
        struct hub_settings s;
        char err[256], path[1024], want[1024];

        clear_env();
        setenv("HOME", dir, 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(strcmp(s.endpoint, "https://huggingface.co") == 0);
        snprintf(want, sizeof want, "%s/.cache/huggingface/hub", dir);
        CHECK_MSG(strcmp(s.cache_dir, want) == 0, "%s", s.cache_dir);
        CHECK(s.token == NULL);
        CHECK(!s.offline);
        CHECK(s.etag_timeout_s == HUB_TIMEOUT_DEFAULT_S && s.download_timeout_s == HUB_TIMEOUT_DEFAULT_S);
        hub_settings_clear(&s);

        setenv("HF_ENDPOINT", "http://127.0.0.1:9/mirror//", 1);
        setenv("XDG_CACHE_HOME", "~/xdg", 1);
        setenv("HF_HUB_OFFLINE", "yes", 1);
        setenv("HF_HUB_ETAG_TIMEOUT", "3", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(strcmp(s.endpoint, "http://127.0.0.1:9/mirror") == 0);
        snprintf(want, sizeof want, "%s/xdg/huggingface/hub", dir);
        CHECK_MSG(strcmp(s.cache_dir, want) == 0, "%s", s.cache_dir);
        CHECK(s.offline);
        CHECK(s.etag_timeout_s == 3);
        hub_settings_clear(&s);

        /* HF_HOME wins over XDG_CACHE_HOME; '~' and $VARS are expanded. */
        setenv("EFFNET_TEST_SUB", "sub", 1);
        setenv("HF_HOME", "~/h/$EFFNET_TEST_SUB/${EFFNET_TEST_SUB}/$NOT_SET_ANYWHERE", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        snprintf(want, sizeof want, "%s/h/sub/sub/$NOT_SET_ANYWHERE/hub", dir);
        CHECK_MSG(strcmp(s.cache_dir, want) == 0, "%s", s.cache_dir);
        hub_settings_clear(&s);

        /* HUGGINGFACE_HUB_CACHE over HF_HOME, HF_HUB_CACHE over both. */
        setenv("HUGGINGFACE_HUB_CACHE", "/legacy", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(strcmp(s.cache_dir, "/legacy") == 0);
        hub_settings_clear(&s);
        setenv("HF_HUB_CACHE", "/new", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(strcmp(s.cache_dir, "/new") == 0);
        hub_settings_clear(&s);
        struct hub_opts o = { .cache_dir = "/opt", .endpoint = "http://x" };
        REQUIRE(hub_settings_get(&o, err, sizeof err, &s) == 0);
        CHECK(strcmp(s.cache_dir, "/opt") == 0 && strcmp(s.endpoint, "http://x") == 0);
        hub_settings_clear(&s);

        /* Tokens: HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the file. */
        clear_env();
        snprintf(path, sizeof path, "%s/hf", dir);
        setenv("HF_HOME", path, 1);
        mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/hf/token", dir);
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs("  hf_file\n", f);
        fclose(f);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(s.token && strcmp(s.token, "hf_file") == 0);
        hub_settings_clear(&s);
        setenv("HUGGING_FACE_HUB_TOKEN", "hf_legacy", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(s.token && strcmp(s.token, "hf_legacy") == 0);
        hub_settings_clear(&s);
        setenv("HF_TOKEN", " hf_env \n", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(s.token && strcmp(s.token, "hf_env") == 0);
        hub_settings_clear(&s);
        /* A blank HF_TOKEN is none: the next source is used. */
        setenv("HF_TOKEN", "  \n", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(s.token && strcmp(s.token, "hf_legacy") == 0);
        hub_settings_clear(&s);
        setenv("HF_TOKEN", "hf bad", 1);
        CHECK(hub_settings_get(NULL, err, sizeof err, &s) == -EINVAL);
        CHECK(strstr(err, "HF_TOKEN") != NULL);
        setenv("HF_TOKEN", "a\r\nX-Injected: 1", 1);
        CHECK(hub_settings_get(NULL, err, sizeof err, &s) == -EINVAL);
        unsetenv("HF_TOKEN");
        unsetenv("HUGGING_FACE_HUB_TOKEN");
        setenv("HF_TOKEN_PATH", "/nonexistent/token", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(s.token == NULL);
        CHECK(s.ca_bundle == NULL);
        hub_settings_clear(&s);
        hub_settings_clear(NULL);

        /* The CA bundle as requests reads it: REQUESTS_CA_BUNDLE first. */
        setenv("CURL_CA_BUNDLE", "/etc/curl.pem", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(s.ca_bundle && strcmp(s.ca_bundle, "/etc/curl.pem") == 0);
        hub_settings_clear(&s);
        setenv("REQUESTS_CA_BUNDLE", "/etc/requests.pem", 1);
        REQUIRE(hub_settings_get(NULL, err, sizeof err, &s) == 0);
        CHECK(s.ca_bundle && strcmp(s.ca_bundle, "/etc/requests.pem") == 0);
        hub_settings_clear(&s);
        clear_env();
}

/* Addresses in messages: the query (a CDN's signature) and user name and
 * password never shown, the rest of the text as it was. */
static void test_redact(void)
{
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "no address here?", "no address here?" },
                { "https://cdn.example/b/c?X-Amz-Signature=s3cret&Expires=1",
                  "https://cdn.example/b/c?[redacted]" },
                { "GET https://u:pw@cdn.example:8443/x#frag failed",
                  "GET https://cdn.example:8443/x?[redacted] failed" },
                { "a http://h/p?sig=s3cret: more than announced; 'https://h2/?s3cret' and (http://h3/q?k=s3cret)",
                  "a http://h/p?[redacted]: more than announced; 'https://h2/?[redacted]' and (http://h3/q?[redacted])" },
                { "x-custom+scheme://user@h/p?s3cret, next", "x-custom+scheme://h/p?[redacted], next" },
                { "http://h/p, https://h/q?s3cret", "http://h/p, https://h/q?[redacted]" },
                { "://?s3cret", "://?[redacted]" },
                { "", "" },
        };
        char out[256];

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                hub_redact(cases[i].in, out, sizeof out);
                CHECK_MSG(strcmp(out, cases[i].out) == 0, "'%s' -> '%s'", cases[i].in, out);
                CHECK_MSG(strstr(out, "s3cret") == NULL && strstr(out, "pw@") == NULL, "%s", out);
        }
        /* Cut to the buffer, still terminated. */
        char small[12];
        hub_redact("https://h/p?s3cret", small, sizeof small);
        CHECK(strcmp(small, "https://h/p") == 0);
        hub_redact("https://h/p?s3cret", small, 0);
}

static void put(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs(text, f);
        fclose(f);
}

/* A cache as huggingface_hub leaves it: found offline, no network. */
static void test_cache(const char *dir)
{
        const char *commit = "0123456789abcdef0123456789abcdef01234567";
        char cache[1024], p[2048], err[512];
        struct hub_ref ref;
        struct hub_file *f = NULL;

        clear_env();
        snprintf(cache, sizeof cache, "%s/cache", dir);
        struct hub_opts o = { .cache_dir = cache, .offline = true };
        REQUIRE(hub_ref_init("org/name", NULL, NULL, err, sizeof err, &ref) == 0);
        CHECK(hub_fetch(&ref, &o, err, sizeof err, &f) == -ENOENT);
        CHECK(f == NULL);
        CHECK(strstr(err, "HF_HUB_OFFLINE") != NULL);

        const char *dirs[] = { "", "/models--org--name", "/models--org--name/blobs", "/models--org--name/refs",
                               "/models--org--name/snapshots" };
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
                snprintf(p, sizeof p, "%s%s", cache, dirs[i]);
                mkdir(p, 0755);
        }
        snprintf(p, sizeof p, "%s/models--org--name/blobs/abc", cache);
        put(p, "weights");
        snprintf(p, sizeof p, "%s/models--org--name/snapshots/%s", cache, commit);
        mkdir(p, 0755);
        snprintf(p, sizeof p, "%s/models--org--name/snapshots/%s/model.safetensors", cache, commit);
        REQUIRE(symlink("../../blobs/abc", p) == 0);

        /* A commit as the revision needs no ref. */
        REQUIRE(hub_ref_init("org/name", commit, NULL, err, sizeof err, &ref) == 0);
        REQUIRE(hub_fetch(&ref, &o, err, sizeof err, &f) == 0);
        CHECK(strcmp(f->path, p) == 0);
        CHECK(strcmp(f->commit, commit) == 0);
        CHECK(!f->downloaded && !f->network);
        f = hub_file_free(f);

        /* main: not without refs/main; then found through it. */
        REQUIRE(hub_ref_init("org/name", NULL, NULL, err, sizeof err, &ref) == 0);
        CHECK(hub_fetch(&ref, &o, err, sizeof err, &f) == -ENOENT);
        char ref_path[2048];
        snprintf(ref_path, sizeof ref_path, "%s/models--org--name/refs/main", cache);
        put(ref_path, commit);
        REQUIRE(hub_fetch(&ref, &o, err, sizeof err, &f) == 0);
        CHECK(strcmp(f->path, p) == 0);
        f = hub_file_free(f);

        /* A dangling snapshot link (blob gone) is not a cached file. */
        snprintf(p, sizeof p, "%s/models--org--name/blobs/abc", cache);
        unlink(p);
        CHECK(hub_fetch(&ref, &o, err, sizeof err, &f) == -ENOENT);
        /* Nor is a ref that holds no commit. */
        put(p, "weights");
        put(ref_path, "../../../etc");
        CHECK(hub_fetch(&ref, &o, err, sizeof err, &f) == -ENOENT);
        CHECK(hub_file_free(NULL) == NULL);
}

/* The one digest: SHA-256 and git's blob SHA-1, of bytes and of a file,
 * against known values (FIPS 180's "abc"; `git hash-object` of "hello\n"). */
static void test_digest(const char *dir)
{
        char hex[65], path[512];
        const char prefix[] = "blob 6";   /* and its NUL */

        CHECK_EQ(hub_digest_hex(HUB_SHA256, NULL, 0, "abc", 3, NULL, hex), 0);
        CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
        CHECK_EQ(hub_digest_hex(HUB_SHA1, prefix, sizeof prefix, "hello\n", 6, NULL, hex), 0);
        CHECK(strcmp(hex, "ce013625030ba8dba906f756967f9e9ca394464a") == 0);
        snprintf(path, sizeof path, "%s/hello", dir);
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs("hello\n", f);
        fclose(f);
        CHECK_EQ(hub_digest_hex(HUB_SHA1, prefix, sizeof prefix, NULL, 0, path, hex), 0);
        CHECK(strcmp(hex, "ce013625030ba8dba906f756967f9e9ca394464a") == 0);
        CHECK_EQ(hub_digest_hex(HUB_SHA256, NULL, 0, NULL, 0, path, hex), 0);
        CHECK(strcmp(hex, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03") == 0);
        snprintf(path, sizeof path, "%s/missing", dir);
        CHECK_EQ(hub_digest_hex(HUB_SHA256, NULL, 0, NULL, 0, path, hex), -ENOENT);
}

int main(void)
{
        char dir[] = "/tmp/effnet-test-hub-XXXXXX";

        REQUIRE(mkdtemp(dir));
        test_parse();
        test_ref_init();
        test_settings(dir);
        test_redact();
        test_cache(dir);
        test_digest(dir);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", dir);
        return CHECK_DONE();
}

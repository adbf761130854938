/* Unit test of effnetd's settings (src/daemon/config.c): precedence of
 * defaults < file < environment < flags, where each value came from, every
 * error reported with its place, and the list of changed settings. */
#include "check.h"
#include "config.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/effnet-test-config-XXXXXX";
static char path[64];

static void write_file(const char *text)
{
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs(text, f);
        fclose(f);
}

/* conf_load over "effnetd --config PATH" and the given flags. */
static int load(struct conf *c, char *err, size_t err_len, const char *flag, const char *value)
{
        char *argv[] = { "effnetd", "--config", path, (char *)flag, (char *)value, NULL };
        int argc = flag ? (value ? 5 : 4) : 3;
        return conf_load(argc, argv, c, err, err_len);
}

/* The "# origin" comment --print-config writes after `name = value`. */
static void check_origin(const struct conf *c, const char *line_start, const char *origin)
{
        char buf[16384] = "";
        FILE *f = fmemopen(buf, sizeof buf - 1, "w");
        REQUIRE(f);
        conf_print(f, c);
        fclose(f);
        const char *line = strstr(buf, line_start);
        CHECK_MSG(line != NULL, "no line '%s' in:\n%s", line_start, buf);
        if (!line)
                return;
        const char *eol = strchr(line, '\n');
        char want[128];
        snprintf(want, sizeof want, "# %s", origin);
        const char *o = strstr(line, want);
        CHECK_MSG(o && (!eol || o < eol), "'%s' is not from %s", line_start, origin);
}

static void test_precedence(void)
{
        struct conf c;
        char err[1024], origin[80];

        write_file("# comment\n[batching]\nqueue = 100\nmax-batch = 4\n\n[server]\nlisten = \"127.0.0.1:9\"\n"
                   "[model]\nweights = w.safetensors\n");
        unsetenv("EFFNETD_QUEUE");

        /* Defaults, then the file. */
        int r = load(&c, err, sizeof err, NULL, NULL);
        CHECK_MSG(r == 0, "%s", err);
        REQUIRE(r == 0);
        CHECK_EQ(c.queue, 100);
        CHECK_EQ(c.max_batch, 4);
        CHECK_EQ(c.drain_timeout_us, 30 * PARSE_S);
        CHECK(c.listen && strcmp(c.listen, "127.0.0.1:9") == 0);
        CHECK(c.file && strcmp(c.file, path) == 0);
        snprintf(origin, sizeof origin, "%s:3", path);
        check_origin(&c, "queue = 100", origin);
        check_origin(&c, "drain-timeout = 30", "default");
        conf_free(&c);

        /* The environment over the file. */
        setenv("EFFNETD_QUEUE", "200", 1);
        REQUIRE(load(&c, err, sizeof err, NULL, NULL) == 0);
        CHECK_EQ(c.queue, 200);
        CHECK_EQ(c.max_batch, 4);
        check_origin(&c, "queue = 200", "EFFNETD_QUEUE");
        conf_free(&c);

        /* Flags over both, as "--name value" and "--name=value". */
        REQUIRE(load(&c, err, sizeof err, "--queue", "300") == 0);
        CHECK_EQ(c.queue, 300);
        check_origin(&c, "queue = 300", "--queue");
        conf_free(&c);
        REQUIRE(load(&c, err, sizeof err, "--queue=301", NULL) == 0);
        CHECK_EQ(c.queue, 301);
        conf_free(&c);
        unsetenv("EFFNETD_QUEUE");

        /* Booleans: --name, --no-name, and values in the file. */
        REQUIRE(load(&c, err, sizeof err, "--no-access-log", NULL) == 0);
        CHECK_EQ(c.access_log, 0);
        conf_free(&c);
}

static void test_errors(void)
{
        struct conf c = { 0 };
        char err[2048];

        /* Every bad line is reported with its place; nothing is returned. */
        write_file("[batching]\nqueue = 0\nmax-batch = lots\n[nowhere]\nx = 1\n[server]\nqueue = 5\nbogus = 1\n");
        c.queue = -7;
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        CHECK_EQ(c.queue, -7);
        char want[128];
        snprintf(want, sizeof want, "%s:2:", path);
        CHECK_CONTAINS(err, want);
        snprintf(want, sizeof want, "%s:3:", path);
        CHECK_CONTAINS(err, want);
        CHECK_CONTAINS(err, "unknown section [nowhere]");
        CHECK_CONTAINS(err, "queue belongs in section [batching]");
        CHECK_CONTAINS(err, "unknown key 'bogus'");

        /* Bad environment values and flags name their source. */
        write_file("[model]\nweights = w.safetensors\n");
        setenv("EFFNETD_MAX_BATCH", "9999", 1);
        CHECK_EQ(load(&c, err, sizeof err, "--drain-timeout", "-1"), -EINVAL);
        CHECK_CONTAINS(err, "EFFNETD_MAX_BATCH");
        CHECK_CONTAINS(err, "--drain-timeout");
        unsetenv("EFFNETD_MAX_BATCH");
        CHECK_EQ(load(&c, err, sizeof err, "--no-such-flag", NULL), -EINVAL);
        CHECK_CONTAINS(err, "unknown option '--no-such-flag'");
        CHECK_EQ(load(&c, err, sizeof err, "--queue", NULL), -EINVAL);
        CHECK_CONTAINS(err, "--queue needs a value");

        /* Settings checked against each other name both origins. */
        write_file("[batching]\nqueue = 10\n[model]\nweights = w.safetensors\n");
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        CHECK_CONTAINS(err, "max-images (32, from default) exceeds queue");

        /* A named file that does not exist is an error; the default one is optional. */
        char *argv[] = { "effnetd", "--config", "/nonexistent/effnetd.conf", NULL };
        CHECK_EQ(conf_load(3, argv, &c, err, sizeof err), -EINVAL);
        CHECK_CONTAINS(err, "/nonexistent/effnetd.conf");
}

/* Durations from every source take a unit; a bare number keeps the
 * setting's own unit; --print-config shows that unit, so that what it
 * prints reads back the same. Enumerations are stored as their enum. */
/* A file line by line: a line too long is reported and skipped whole, a
 * malformed header keeps the section, keys under an unknown section are
 * not reported again, quotes are taken off before the value is checked,
 * and a file over the limit stops being read. */
static void test_file_lines(void)
{
        struct conf c = { 0 };
        char err[2048], want[160];
        FILE *f;

        f = fopen(path, "w");
        REQUIRE(f);
        fputs("[batching]\n# ", f);
        for (int i = 0; i < 5000; i++)
                fputc('x', f);
        fputs("\nqueue = 0\n", f);
        fclose(f);
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        snprintf(want, sizeof want, "%s:2: line longer than 4094 bytes", path);
        CHECK_CONTAINS(err, want);
        CHECK_MSG(!strstr(err, "expected key"), "the rest of the long line was parsed: %s", err);
        snprintf(want, sizeof want, "%s:3: queue", path);
        CHECK_CONTAINS(err, want);

        write_file("[batching\nqueue = 5\n[nowhere]\nbogus = 1\n[model]\nweights = \"\"\nlabels\n");
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        snprintf(want, sizeof want, "%s:1: malformed section header", path);
        CHECK_CONTAINS(err, want);
        snprintf(want, sizeof want, "%s:2: queue belongs in section [batching]", path);
        CHECK_CONTAINS(err, want);
        snprintf(want, sizeof want, "%s:3: unknown section [nowhere]", path);
        CHECK_CONTAINS(err, want);
        CHECK_MSG(!strstr(err, "bogus"), "a key under an unknown section was reported: %s", err);
        snprintf(want, sizeof want, "%s:6: weights must not be empty", path);
        CHECK_CONTAINS(err, want);
        snprintf(want, sizeof want, "%s:7: expected key = value", path);
        CHECK_CONTAINS(err, want);

        f = fopen(path, "w");
        REQUIRE(f);
        for (int i = 0; i < CONF_MAX_FILE_BYTES / 64 + 1; i++)
                fprintf(f, "# %61d\n", i);
        fputs("bogus = 1\n", f);
        fclose(f);
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        snprintf(want, sizeof want, "file larger than %d bytes", CONF_MAX_FILE_BYTES);
        CHECK_CONTAINS(err, want);
        CHECK_MSG(!strstr(err, "bogus"), "a line past the size limit was read: %s", err);
        conf_free(&c);
}

static void test_durations_and_enums(void)
{
        struct conf c, back;
        char err[1024], printed[16384] = "";

        write_file("[model]\nweights = w.safetensors\nprecision = bf16\npadding = same\n"
                   "[server]\nconnection-timeout = 2m\nbody-timeout = 45\n"
                   "[batching]\nmax-delay-ms = 500us\ndeadline-ms = 1.5s\n[log]\nlog-format = json\n");
        setenv("EFFNETD_HEADER_TIMEOUT", "1h", 1);
        int r = load(&c, err, sizeof err, "--drain-timeout", "90s");
        unsetenv("EFFNETD_HEADER_TIMEOUT");
        CHECK_MSG(r == 0, "%s", err);
        REQUIRE(r == 0);
        CHECK_EQ(c.connection_timeout_us, 120 * PARSE_S);
        CHECK_EQ(c.body_timeout_us, 45 * PARSE_S);
        CHECK_EQ(c.header_timeout_us, 3600 * PARSE_S);
        CHECK_EQ(c.drain_timeout_us, 90 * PARSE_S);
        CHECK_EQ(c.max_delay_us, 500);
        CHECK_EQ(c.deadline_us, 1500 * PARSE_MS);
        CHECK_EQ(c.retry_after_us, PARSE_S);     /* the default, "1" */
        CHECK(c.precision == EFFNET_BF16 && c.padding == EFFNET_PAD_SAME && c.log_format == CONF_LOG_JSON);
        char origin[80];
        const char *lines[][2] = { { "connection-timeout = 120 ", "6" }, { "max-delay-ms = 0.5 ", "9" },
                                   { "deadline-ms = 1500 ", "10" }, { "precision = bf16 ", "3" } };
        for (size_t i = 0; i < ARRAY_SIZE(lines); i++) {
                snprintf(origin, sizeof origin, "%s:%s", path, lines[i][1]);
                check_origin(&c, lines[i][0], origin);
        }

        /* What --print-config wrote, without its origin comments, is a
         * config file with the same values. */
        FILE *f = fmemopen(printed, sizeof printed - 1, "w");
        REQUIRE(f);
        conf_print(f, &c);
        fclose(f);
        for (char *p = strstr(printed, "    # "); p; p = strstr(p, "    # ")) {
                char *eol = strchr(p, '\n');
                memmove(p, eol ? eol : p + strlen(p), strlen(eol ? eol : p + strlen(p)) + 1);
        }
        write_file(printed);
        r = load(&back, err, sizeof err, NULL, NULL);
        CHECK_MSG(r == 0, "%s", err);
        REQUIRE(r == 0);
        CHECK_EQ(conf_changes(&c, &back, "none", err, sizeof err), 0);
        conf_free(&back);
        conf_free(&c);

        /* Bad units, steps finer than the setting honours, and bounds in any unit. */
        write_file("[model]\nweights = w.safetensors\n[server]\nbody-timeout = 5d\nretry-after = 1500ms\n"
                   "header-timeout = 61m\n[batching]\ndeadline-ms = 0.5ms\n");
        CHECK_EQ(load(&c, err, sizeof err, "--max-delay-ms", "11s"), -EINVAL);
        CHECK_CONTAINS(err, "effnetd.conf:4: body-timeout '5d' is not a duration in 0..86400s");
        CHECK_CONTAINS(err, "effnetd.conf:5: retry-after '1500ms' is not a duration in 0..3600s in steps of 1s");
        CHECK_CONTAINS(err, "effnetd.conf:6: header-timeout '61m'");
        CHECK_CONTAINS(err, "effnetd.conf:8: deadline-ms '0.5ms' is not a duration in 1..3600000ms");
        CHECK_CONTAINS(err, "--max-delay-ms: max-delay-ms '11s' is not a duration in 0..10000ms");
        CHECK_EQ(load(&c, err, sizeof err, "--log-format", "xml"), -EINVAL);
        CHECK_CONTAINS(err, "log-format 'xml' is not one of text, json");
}

static void test_changes(void)
{
        struct conf a, b;
        char err[1024], buf[512];

        write_file("[batching]\nqueue = 40\n[model]\nbn-eps = 0.001\nweights = w.safetensors\n");
        REQUIRE(load(&a, err, sizeof err, NULL, NULL) == 0);
        write_file("[batching]\nqueue = 50\n[model]\nbn-eps = 0.002\nweights = w.safetensors\n");
        REQUIRE(load(&b, err, sizeof err, NULL, NULL) == 0);
        /* Model settings reload with the weights: only queue is listed. */
        CHECK_EQ(conf_changes(&a, &b, "model", buf, sizeof buf), 1);
        CHECK_CONTAINS(buf, "queue (40 -> 50)");
        CHECK_EQ(conf_changes(&a, &b, "none", buf, sizeof buf), 2);
        CHECK_EQ(conf_changes(&a, &a, "none", buf, sizeof buf), 0);
        conf_free(&a);
        conf_free(&b);
}

/* memory-budget, its former name max-body-total, and max-client-share:
 * the share's default (half, at least the largest body), the old name
 * setting the new one, and the combinations that could never serve a body. */
static void test_memory_budget(void)
{
        struct conf c = { 0 };
        char err[1024];

        write_file("[model]\nweights = w.safetensors\n");
        REQUIRE(load(&c, err, sizeof err, NULL, NULL) == 0);
        CHECK_EQ(c.memory_budget, 512LL << 20);
        CHECK_EQ(c.max_client_share, 256LL << 20);
        check_origin(&c, "# max-body-total =", "unset");
        conf_free(&c);

        /* A small budget: the share is at least the largest body limit. */
        write_file("[model]\nweights = w.safetensors\n[limits]\nmemory-budget = 120M\n");
        REQUIRE(load(&c, err, sizeof err, NULL, NULL) == 0);
        CHECK_EQ(c.max_client_share, 96LL << 20);   /* v2-max-body-bytes */
        conf_free(&c);

        /* The former name sets the budget, from where it was given. */
        write_file("[model]\nweights = w.safetensors\n[limits]\nmax-body-total = 300M\n");
        REQUIRE(load(&c, err, sizeof err, NULL, NULL) == 0);
        CHECK_EQ(c.memory_budget, 300LL << 20);
        CHECK_EQ(c.max_client_share, 150LL << 20);
        char origin[80];
        snprintf(origin, sizeof origin, "%s:4", path);
        check_origin(&c, "memory-budget = ", origin);
        conf_free(&c);
        CHECK_EQ(load(&c, err, sizeof err, "--memory-budget", "200M"), -EINVAL);
        CHECK_CONTAINS(err, "max-body-total (314572800, from");
        CHECK_CONTAINS(err, "is the former name of memory-budget (209715200, from --memory-budget)");
        REQUIRE(load(&c, err, sizeof err, "--memory-budget", "300M") == 0);   /* both, agreeing */
        conf_free(&c);

        write_file("[model]\nweights = w.safetensors\n[limits]\nmemory-budget = 64M\n");
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        CHECK_CONTAINS(err, "memory-budget (67108864) is smaller than v2-max-body-bytes (100663296)");
        write_file("[model]\nweights = w.safetensors\n[limits]\nmemory-budget = 200M\nmax-client-share = 300M\n");
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        CHECK_CONTAINS(err, "max-client-share (314572800) is larger than memory-budget (209715200)");
        CHECK_EQ(load(&c, err, sizeof err, "--max-client-share", "50M"), -EINVAL);
        CHECK_CONTAINS(err, "max-client-share (52428800) is smaller than v2-max-body-bytes (100663296)");
        REQUIRE(load(&c, err, sizeof err, "--max-client-share", "100M") == 0);
        CHECK_EQ(c.max_client_share, 100LL << 20);
        conf_free(&c);
}

/* [security]: the certificate and key go together; a client CA needs them. */
static void test_security(void)
{
        struct conf c = { 0 };
        char err[1024];

        write_file("[model]\nweights = w.safetensors\n[security]\ntls-cert = s.crt\n");
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        CHECK_CONTAINS(err, "tls-cert and tls-key go together (only tls-cert is set, from");
        CHECK_EQ(load(&c, err, sizeof err, "--tls-client-ca", "ca.crt"), -EINVAL);
        CHECK_CONTAINS(err, "tls-cert and tls-key go together");
        write_file("[model]\nweights = w.safetensors\n[security]\ntls-client-ca = ca.crt\n");
        CHECK_EQ(load(&c, err, sizeof err, NULL, NULL), -EINVAL);
        CHECK_CONTAINS(err, "tls-client-ca (from");
        CHECK_CONTAINS(err, ") needs tls-cert and tls-key");
        write_file("[model]\nweights = w.safetensors\n[security]\ntls-cert = s.crt\ntls-key = s.key\n"
                   "api-keys-file = keys\n");
        REQUIRE(load(&c, err, sizeof err, "--tls-client-ca", "ca.crt") == 0);
        CHECK(strcmp(c.tls_cert, "s.crt") == 0 && strcmp(c.tls_key, "s.key") == 0 &&
              strcmp(c.tls_client_ca, "ca.crt") == 0 && strcmp(c.api_keys_file, "keys") == 0);
        check_origin(&c, "api-keys-file = ", path);
        conf_free(&c);
}

int main(void)
{
        REQUIRE(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/effnetd.conf", dir);
        unsetenv("EFFNETD_CONFIG");
        test_precedence();
        test_errors();
        test_file_lines();
        test_durations_and_enums();
        test_changes();
        test_security();
        test_memory_budget();
        unlink(path);
        rmdir(dir);
        return CHECK_DONE();
}

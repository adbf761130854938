/* Unit test of the model repository's scan (src/daemon/repository.c): the
 * layout, version policies, config.conf (every key, and errors naming the
 * file and line), labels.txt, identities that change with the files, and
 * the limits. */
#include "check.h"
#include "repository.h"
#include "effnet.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[] = "/tmp/effnet-test-repository-XXXXXX";

static void put(const char *rel, const char *text)
{
        char path[512], dir[512];

        snprintf(path, sizeof path, "%s/%s", root, rel);
        snprintf(dir, sizeof dir, "%s", path);
        for (char *p = dir + strlen(root) + 1; (p = strchr(p, '/')); p++) {
                *p = '\0';
                mkdir(dir, 0755);
                *p = '/';
        }
        FILE *f = fopen(path, "w");
        REQUIRE(f);
        fputs(text, f);
        fclose(f);
}

static const struct repo_model *scan(struct repo_scan **sc, const char *name)
{
        char err[512] = "";
        *sc = repo_scan_free(*sc);
        int r = repo_scan(root, NULL, NULL, err, sizeof err, sc);
        CHECK_MSG(r == 0, "%s", err);
        REQUIRE(r == 0);
        return repo_scan_find(*sc, name);
}

int main(void)
{
        struct repo_scan *sc = NULL;
        const struct repo_model *m;
        char err[512];

        REQUIRE(mkdtemp(root));
        CHECK(repo_name_ok("b0", 2) && repo_name_ok("my-model_1.2", 12));
        CHECK(!repo_name_ok(".hidden", 7) && !repo_name_ok("a/b", 3) && !repo_name_ok("", 0));
        CHECK(!repo_name_ok("x234567890123456789012345678901234567890123456789012345678901234", 65));

        /* Default policy: the latest version; folders that are no version are skipped. */
        put("b0/1/model.safetensors", "1");
        put("b0/2/model.safetensors", "22");
        put("b0/10/model.safetensors", "333");
        put("b0/0/model.safetensors", "x");
        put("b0/02/model.safetensors", "x");
        put("b0/latest/model.safetensors", "x");
        put("b0/3/weights.bin", "not the model file");
        m = scan(&sc, "b0");
        REQUIRE(m);
        CHECK_MSG(!m->error[0], "%s", m->error);
        CHECK_EQ(m->n_versions, 1);
        CHECK_EQ(m->versions[0].version, 10);
        CHECK(strstr(m->versions[0].path, "/b0/10/model.safetensors") != NULL);
        CHECK(m->conf.precision == -1 && m->conf.max_batch == 0 && m->conf.bn_eps < 0 && !m->conf.labels[0]);

        put("b0/config.conf", "# comment\n[model]\nversion-policy = latest 2\n");
        m = scan(&sc, "b0");
        CHECK_EQ(m->n_versions, 2);
        CHECK(m->versions[0].version == 10 && m->versions[1].version == 2);
        put("b0/config.conf", "version-policy = all\n");
        CHECK_EQ(scan(&sc, "b0")->n_versions, 3);
        put("b0/config.conf", "version_policy = specific 1, 2\n");
        m = scan(&sc, "b0");
        CHECK(m->n_versions == 2 && m->versions[0].version == 2 && m->versions[1].version == 1);
        put("b0/config.conf", "version-policy = specific 7\n");
        m = scan(&sc, "b0");
        CHECK(m->n_versions == 0 && strstr(m->error, "version-policy wants"));

        /* Every key, and labels relative to the model's folder. */
        put("s/1/model.safetensors", "s");
        put("s/config.conf", "labels = names.txt\nprecision = bf16\npadding = same\nbn-eps = 0.001\n"
                             "input-size = 64\nmax-batch = 2\nworkers = 1\nthreads = 2\n");
        m = scan(&sc, "s");
        CHECK_MSG(!m->error[0], "%s", m->error);
        CHECK(m->conf.precision == EFFNET_BF16 && m->conf.padding == EFFNET_PAD_SAME);
        CHECK(m->conf.bn_eps > 0.00099 && m->conf.bn_eps < 0.00101);
        CHECK(m->conf.input_size == 64 && m->conf.max_batch == 2 && m->conf.workers == 1 && m->conf.threads == 2);
        CHECK(strstr(m->conf.labels, "/s/names.txt") != NULL);
        /* The identity of the settings changes with config.conf. */
        char before[400];
        snprintf(before, sizeof before, "%s", m->conf_ident);
        usleep(20000);
        put("s/config.conf", "input-size = 96\n");
        m = scan(&sc, "s");
        CHECK(strcmp(before, m->conf_ident) != 0 && m->conf.input_size == 96);
        /* labels.txt beside it, without a labels key. */
        put("s/labels.txt", "a\n");
        CHECK(strstr(scan(&sc, "s")->conf.labels, "/s/labels.txt") != NULL);

        /* Errors name the file and line; the other models still scan. */
        const char *bad[] = { "input-size = 16\n", "max-batch = 257\n", "precision = fp64\n", "padding = valid\n",
                              "version-policy = newest\n", "version-policy = latest 0\n", "colour = blue\n",
                              "\n\njust words\n", "version-policy = specific\n" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                put("s/config.conf", bad[i]);
                m = scan(&sc, "s");
                CHECK_MSG(m && m->n_versions == 0 && strstr(m->error, "s/config.conf:"), "%s: %s", bad[i],
                          m ? m->error : "");
                CHECK(scan(&sc, "b0") != NULL);
        }
        put("s/config.conf", "\n\njust words\n");
        CHECK(strstr(scan(&sc, "s")->error, "config.conf:3: expected key = value") != NULL);
        /* The daemon's config file's reader and words: headers, unknown keys. */
        put("s/config.conf", "[model\n");
        CHECK_CONTAINS(scan(&sc, "s")->error, "config.conf:1: malformed section header");
        put("s/config.conf", "colour = blue\n");
        CHECK_CONTAINS(scan(&sc, "s")->error, "config.conf:1: unknown key 'colour'");

        /* Quoted values lose their quotes (labels with a space in its name). */
        put("s/config.conf", "labels = \"my names.txt\"\nprecision = \"bf16\"\n; a comment\nmax-batch=\"4\"\n");
        m = scan(&sc, "s");
        CHECK_MSG(!m->error[0], "%s", m->error);
        CHECK_MSG(strstr(m->conf.labels, "/s/my names.txt") != NULL, "%s", m->conf.labels);
        CHECK(m->conf.precision == EFFNET_BF16 && m->conf.max_batch == 4);

        /* An over-long line is reported with its file and line; its rest is
         * drained, not read as a line of its own. */
        {
                static char text[6000];
                int n = snprintf(text, sizeof text, "max-batch = 2\nlabels = ");
                memset(text + n, 'x', 5000);
                snprintf(text + n + 5000, sizeof text - (size_t)n - 5000, " = y\ninput-size = 64\n");
                put("s/config.conf", text);
                m = scan(&sc, "s");
                CHECK_CONTAINS(m->error, "s/config.conf:2: line longer than 4094 bytes");
                CHECK(m->n_versions == 0);
        }
        /* A config.conf over its size limit. */
        {
                static char text[70000];
                for (size_t i = 0; i + 16 < sizeof text; i += 16)
                        memcpy(text + i, "# padding line\n\n", 16);
                text[sizeof text - 1] = '\0';
                put("s/config.conf", text);
                CHECK_CONTAINS(scan(&sc, "s")->error, "file larger than 65536 bytes");
        }

        /* int8: the calibration beside each version's weights, or the
         * calibration key's file, relative to the version's folder. */
        put("c/1/model.safetensors", "c1");
        put("c/2/model.safetensors", "c2");
        put("c/config.conf", "precision = int8\nversion-policy = all\n");
        put("c/2/calibration.json", "{}");
        m = scan(&sc, "c");
        CHECK_MSG(m && !m->error[0] && m->n_versions == 2, "%s", m ? m->error : "");
        CHECK(m->conf.precision == EFFNET_INT8);
        CHECK_MSG(strstr(m->versions[0].calibration, "/c/2/calibration.json") != NULL, "%s",
                  m->versions[0].calibration);
        CHECK_MSG(m->versions[1].calibration[0] == '\0', "%s", m->versions[1].calibration);
        snprintf(before, sizeof before, "%s", m->versions[0].ident);
        usleep(20000);
        put("c/2/calibration.json", "{ }");
        m = scan(&sc, "c");
        CHECK_MSG(strcmp(before, m->versions[0].ident) != 0, "%s", m->versions[0].ident);
        put("c/config.conf", "precision = int8\ncalibration = \"../cal.json\"\n");
        m = scan(&sc, "c");
        CHECK_MSG(strstr(m->versions[0].calibration, "/c/2/../cal.json") != NULL, "%s", m->versions[0].calibration);
        put("c/config.conf", "calibration = /srv/cal.json\n");
        CHECK(strcmp(scan(&sc, "c")->versions[0].calibration, "/srv/cal.json") == 0);
        put("c/config.conf", "calibration =\n");
        CHECK_CONTAINS(scan(&sc, "c")->error, "c/config.conf:1: calibration");

        /* A load's config: config.conf's keys over the file's, checked alike. */
        {
                struct repo_override *o = NULL;
                const char *refused[][2] = {
                        { "{\"parameters\":{\"config\":\"{\\\"colour\\\": 1}\"}}", "unknown key 'colour'" },
                        { "{\"parameters\":{\"config\":\"{\\\"max-batch\\\": 999}\"}}", "max-batch" },
                        { "{\"parameters\":{\"config\":\"{\\\"max-batch\\\": null}\"}}", "max-batch" },
                        { "{\"parameters\":{\"config\":\"{\\\"precision\\\": \\\"fp64\\\"}\"}}", "precision" },
                        { "{\"parameters\":{\"config\":\"[1]\"}}", "JSON object" },
                        { "{\"parameters\":{\"config\":{\"max-batch\":2}}}", "string holding a JSON object" },
                        { "{\"parameters\":{\"file:1/model.safetensors\":\"AAAA\"}}", "not supported" },
                        { "{\"parameters\":[]}", "not an object" },
                        { "{", "not a JSON object" },
                };
                for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
                        err[0] = '\0';
                        int r = repo_override_parse("b0", refused[i][0], strlen(refused[i][0]), err, sizeof err, &o);
                        CHECK_MSG(r == -EINVAL && strstr(err, refused[i][1]), "%s: %d %s", refused[i][0], r, err);
                }
                const char *none[] = { "", "{}", "{\"parameters\":{}}" };
                for (size_t i = 0; i < 3; i++) {
                        o = (struct repo_override *)1;
                        CHECK_EQ(repo_override_parse("b0", none[i], strlen(none[i]), err, sizeof err, &o), 0);
                        CHECK(o == NULL);
                }
                const char *body = "{\"parameters\":{\"config\":\"{\\\"max_batch\\\": 4, \\\"bn-eps\\\": 0.001, "
                                   "\\\"version-policy\\\": \\\"all\\\", \\\"precision\\\": \\\"int8\\\"}\"}}";
                REQUIRE(repo_override_parse("b0", body, strlen(body), err, sizeof err, &o) == 0 && o);
                CHECK_EQ(o->n, 4);
                put("b0/config.conf", "version-policy = latest 1\nmax-batch = 2\n");
                sc = repo_scan_free(sc);
                REQUIRE(repo_scan(root, NULL, o, err, sizeof err, &sc) == 0);
                m = repo_scan_find(sc, "b0");
                CHECK_MSG(!m->error[0], "%s", m->error);
                CHECK(m->conf.max_batch == 4 && m->conf.policy == REPO_ALL && m->n_versions == 3 &&
                      m->conf.precision == EFFNET_INT8 && m->conf.bn_eps > 0.00099 && m->conf.bn_eps < 0.00101);
                CHECK(strstr(m->conf_ident, "override") != NULL);
                /* The other models keep their own. */
                CHECK(repo_scan_find(sc, "s")->conf.max_batch != 4);
                repo_override_free(o);
                m = scan(&sc, "b0");
                CHECK(m->conf.max_batch == 2 && m->n_versions == 1 && !strstr(m->conf_ident, "override"));
        }

        /* A model folder without versions is listed with why. */
        mkdir(strcat(strcpy(err, root), "/empty"), 0755);
        m = scan(&sc, "empty");
        CHECK(m && m->n_versions == 0 && strstr(m->error, "VERSION"));
        /* Only one model; a missing one, a missing repository. */
        sc = repo_scan_free(sc);
        CHECK_EQ(repo_scan(root, "b0", NULL, err, sizeof err, &sc), 0);
        CHECK(sc && sc->n == 1);
        sc = repo_scan_free(sc);
        CHECK_EQ(repo_scan(root, "nope", NULL, err, sizeof err, &sc), -ENOENT);
        CHECK_EQ(repo_scan("/nonexistent/repository", NULL, NULL, err, sizeof err, &sc), -ENOENT);
        CHECK(strstr(err, "/nonexistent/repository") != NULL);
        /* The limit of models. */
        for (int i = 0; i <= REPO_MAX_MODELS; i++) {
                char rel[64];
                snprintf(rel, sizeof rel, "m%03d/1/model.safetensors", i);
                put(rel, "x");
        }
        CHECK_EQ(repo_scan(root, NULL, NULL, err, sizeof err, &sc), -E2BIG);
        CHECK(strstr(err, "more than") != NULL);
        repo_scan_free(sc);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", root);
        CHECK(system(cmd) == 0);
        return CHECK_DONE();
}

/* Unit test of the API's shapes (src/server/api.c): the classify answers,
 * top_k parsing, labels (files, a hub repository's config.json), the
 * weights' and labels' sources on /v1/models, and error bodies. */
#include "check.h"
#include "api.h"
#include "batcher.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static json_t *parse(const char *body)
{
        json_error_t e;
        json_t *j = json_loads(body, 0, &e);
        CHECK_MSG(j != NULL, "not JSON (%s): %s", e.text, body);
        return j;
}

static void test_classify(void)
{
        struct api_labels *labels = NULL;
        char err[256], *body = NULL;

        REQUIRE(api_labels_load(NULL, 4, err, sizeof err, &labels) == 0);
        CHECK(strcmp(api_labels_source(labels), "indices") == 0);
        CHECK(strcmp(api_labels_get(labels, 3), "3") == 0);

        /* One image: top 3 of 4 in falling order, softmax scores. */
        float logits[8] = { 0.0f, 2.0f, 1.0f, 2.0f, 5.0f, 0.0f, 0.0f, 0.0f };
        CHECK_EQ(api_classify_body("efficientnetv2-b0", labels, logits, 1, 4, 3, false, &body), 0);
        json_t *j = body ? parse(body) : NULL;
        json_t *p = json_object_get(j, "predictions");
        CHECK(strcmp(json_string_value(json_object_get(j, "model")), "efficientnetv2-b0") == 0);
        CHECK_EQ(json_array_size(p), 3);
        double z = 1 + 2 * exp(2.0) + exp(1.0);
        int want_index[3] = { 1, 3, 2 };  /* ties: the lower index first */
        double want_score[3] = { exp(2.0) / z, exp(2.0) / z, exp(1.0) / z };
        for (int i = 0; i < 3; i++) {
                json_t *e = json_array_get(p, (size_t)i);
                CHECK_EQ(json_integer_value(json_object_get(e, "index")), want_index[i]);
                CHECK(fabs(json_real_value(json_object_get(e, "score")) - want_score[i]) < 1e-5);
                char want_label[8];
                snprintf(want_label, sizeof want_label, "%d", want_index[i]);
                CHECK(strcmp(json_string_value(json_object_get(e, "label")), want_label) == 0);
        }
        json_decref(j);
        free(body);

        /* Two images: the multipart "results" shape, in order. */
        float two[8] = { 0.0f, 2.0f, 1.0f, 2.0f, 5.0f, 0.0f, 0.0f, 0.0f };
        body = NULL;
        CHECK_EQ(api_classify_body("m", labels, two, 2, 4, 1, true, &body), 0);
        j = body ? parse(body) : NULL;
        json_t *r = json_object_get(j, "results");
        CHECK_EQ(json_array_size(r), 2);
        json_t *second = json_array_get(json_object_get(json_array_get(r, 1), "predictions"), 0);
        CHECK_EQ(json_integer_value(json_object_get(second, "index")), 0);
        json_decref(j);
        free(body);

        /* Bad calls, and NaN from broken weights, return no body. */
        body = NULL;
        CHECK_EQ(api_classify_body("m", labels, two, 2, 4, 1, false, &body), -EINVAL);
        CHECK_EQ(api_classify_body("m", labels, two, 1, 4, 5, false, &body), -EINVAL);
        float nan[4] = { 0.0f, NAN, 0.0f, 0.0f };
        CHECK_EQ(api_classify_body("m", labels, nan, 1, 4, 1, false, &body), -EDOM);
        CHECK(body == NULL);
        labels = api_labels_free(labels);
}

static void test_top_k(void)
{
        int k = -1;
        CHECK(api_parse_top_k(NULL, 1000, &k) == 0 && k == API_DEFAULT_TOP_K);
        CHECK(api_parse_top_k(NULL, 3, &k) == 0 && k == 3);
        CHECK(api_parse_top_k("1000", 1000, &k) == 0 && k == 1000);
        k = -1;
        const char *bad[] = { "0", "1001", "-1", "", "5x", " 5", "1e2", "99999999999999999999" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                CHECK_MSG(api_parse_top_k(bad[i], 1000, &k) == -EINVAL, "top_k '%s' accepted", bad[i]);
        CHECK_EQ(k, -1);
}

static void test_labels_file(void)
{
        char path[] = "/tmp/effnet-test-labels-XXXXXX", err[256] = "";
        struct api_labels *l = NULL;
        int fd = mkstemp(path);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, "cat\ndog\n", 8) == 8);
        close(fd);
        CHECK_EQ(api_labels_load(path, 2, err, sizeof err, &l), 0);
        CHECK(l && strcmp(api_labels_get(l, 1), "dog") == 0);
        char source[64];
        snprintf(source, sizeof source, "file:%s", path);
        CHECK(l && strcmp(api_labels_source(l), source) == 0);
        l = api_labels_free(l);
        /* A count that disagrees with the model says both counts. */
        CHECK_EQ(api_labels_load(path, 3, err, sizeof err, &l), -EINVAL);
        CHECK(l == NULL);
        CHECK_CONTAINS(err, "2");
        CHECK_CONTAINS(err, "3");
        unlink(path);
        /* The built-in names for 1000 classes. */
        CHECK_EQ(api_labels_load(NULL, 1000, err, sizeof err, &l), 0);
        CHECK(l && strcmp(api_labels_get(l, 281), "tabby") == 0);
        l = api_labels_free(l);
}

/* A config.json with the given text; its path in path. */
static void write_config(char *path, const char *text)
{
        int fd = mkstemp(path);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
        close(fd);
}

static void test_labels_hub_config(void)
{
        static const struct {
                const char *json;
                int classes, want;
                const char *names[3];   /* the labels when want == 0; a word of the message otherwise */
        } cases[] = {
                /* timm's list, with descriptions for some synsets */
                { "{\"label_names\": [\"n1\", \"n2\", \"n3\"], \"label_descriptions\": {\"n2\": \"goldfish, Carassius\"}}",
                  3, 0, { "n1", "goldfish, Carassius", "n3" } },
                /* an object keyed by the index, as timm writes one with gaps */
                { "{\"label_names\": {\"1\": \"b\", \"0\": \"a\"}}", 2, 0, { "a", "b" } },
                { "{\"label_names\": {\"0\": \"a\", \"2\": \"c\"}}", 2, -EINVAL, { "class 1" } },
                { "{\"architecture\": \"x\"}", 3, -ENOENT, { "no label_names" } },
                { "{\"label_names\": [\"a\", \"b\"]}", 3, -EINVAL, { "2 label_names but the model has 3" } },
                { "{\"label_names\": [\"a\", 5]}", 2, -EINVAL, { "class 1" } },
                { "{\"label_names\": [\"a\", \"two\\nlines\"]}", 2, -EINVAL, { "class 1" } },
                { "{\"label_names\": [\"a\", \"bell\\u0007\"]}", 2, -EBADMSG, { "not printable" } },
                { "not json", 2, -EBADMSG, { "not JSON" } },
        };

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char path[] = "/tmp/effnet-test-config-XXXXXX", err[256] = "";
                struct api_labels *l = NULL;
                write_config(path, cases[i].json);
                int r = api_labels_load_hub_config(path, cases[i].classes, err, sizeof err, &l);
                CHECK_MSG(r == cases[i].want, "case %zu: %d, want %d (%s)", i, r, cases[i].want, err);
                if (r == 0 && l) {
                        CHECK(strcmp(api_labels_source(l), "hub:config.json") == 0);
                        CHECK_EQ(api_labels_count(l), cases[i].classes);
                        for (int k = 0; k < cases[i].classes; k++)
                                CHECK_MSG(strcmp(api_labels_get(l, k), cases[i].names[k]) == 0, "case %zu: label %d is %s",
                                          i, k, api_labels_get(l, k));
                } else {
                        CHECK(l == NULL);
                        CHECK_CONTAINS(err, cases[i].names[0]);
                }
                api_labels_free(l);
                unlink(path);
        }
}

/* A file of text, then size bytes in all (a hole: no disk taken). */
static void write_sized(char *path, const char *text, off_t size)
{
        write_config(path, text);
        REQUIRE(truncate(path, size) == 0);
}

/* Labels files and config.json have a size cap, checked before they are
 * read or parsed: a config.json of 4 MiB is parsed, one byte more is not
 * (jansson's tree of it would take many times its size). */
static void test_label_caps(void)
{
        char path[] = "/tmp/effnet-test-cap-XXXXXX", err[256] = "";
        struct api_labels *l = NULL;

        /* Spaces after the JSON, to the cap: valid, parsed. */
        write_sized(path, "{\"label_names\": [\"a\", \"b\"]}", (off_t)4 << 20);
        int fd = open(path, O_WRONLY);
        REQUIRE(fd >= 0);
        char spaces[4096];
        memset(spaces, ' ', sizeof spaces);
        off_t at = (off_t)strlen("{\"label_names\": [\"a\", \"b\"]}");
        for (off_t o = at; o < ((off_t)4 << 20); o += (off_t)sizeof spaces) {
                size_t n = (size_t)(((off_t)4 << 20) - o < (off_t)sizeof spaces ? ((off_t)4 << 20) - o : (off_t)sizeof spaces);
                REQUIRE(pwrite(fd, spaces, n, o) == (ssize_t)n);
        }
        close(fd);
        CHECK_EQ(api_labels_load_hub_config(path, 2, err, sizeof err, &l), 0);
        l = api_labels_free(l);
        REQUIRE(truncate(path, ((off_t)4 << 20) + 1) == 0);
        CHECK_EQ(api_labels_load_hub_config(path, 2, err, sizeof err, &l), -E2BIG);
        CHECK(l == NULL);
        CHECK_CONTAINS(err, "4194305 bytes, more than 4194304");
        unlink(path);
        /* A missing config.json is an error to report, not "no label_names". */
        CHECK_EQ(api_labels_load_hub_config("/nonexistent/config.json", 2, err, sizeof err, &l), -EIO);

        char lpath[] = "/tmp/effnet-test-cap-XXXXXX";
        write_sized(lpath, "a\nb\n", ((off_t)64 << 20) + 1);
        CHECK_EQ(api_labels_load(lpath, 2, err, sizeof err, &l), -E2BIG);
        CHECK(l == NULL);
        CHECK_CONTAINS(err, "more than 67108864");
        unlink(lpath);
}

/* /v1/models says where the weights and the names come from. */
static void test_models_sources(void)
{
        struct effnet_info info = { .variant = "efficientnetv2-b0", .classes = 3, .dtype = "F32", .seed = -1,
                                    .preproc = { .size = 224, .crop_pct = 1 } };
        struct api_weights hub = { .source = API_WEIGHTS_HUB, .path = "/c/snap/model.safetensors", .sha256 = "ab",
                                   .seed = -1, .repo = "org/name", .revision = "main", .commit = "c0ffee",
                                   .file = "model.safetensors" };
        struct api_weights seeded = { .source = API_WEIGHTS_SEEDED, .path = "/w.safetensors", .sha256 = "cd",
                                      .seed = 7 };
        struct batch_config bc = { .max_batch = 1, .n_exec = 1, .exec_batch = { 1 } };
        struct api_model_desc d = { .info = &info, .weights = &hub, .labels = "hub:config.json", .batch = &bc };
        char *body = NULL;

        CHECK_EQ(api_models_body(&d, &body), 0);
        json_t *j = body ? parse(body) : NULL;
        json_t *m = json_array_get(json_object_get(j, "models"), 0);
        json_t *w = json_object_get(m, "weights"), *lb = json_object_get(m, "labels");
        CHECK(strcmp(json_string_value(json_object_get(w, "source")), "hub") == 0);
        CHECK(strcmp(json_string_value(json_object_get(w, "commit")), "c0ffee") == 0);
        CHECK(strcmp(json_string_value(json_object_get(w, "repo")), "org/name") == 0);
        CHECK(json_object_get(w, "trained") == NULL);
        CHECK(strcmp(json_string_value(json_object_get(lb, "source")), "hub:config.json") == 0);
        CHECK_EQ(json_integer_value(json_object_get(lb, "count")), 3);
        json_decref(j);
        free(body);
        body = NULL;

        d.weights = &seeded;
        CHECK_EQ(api_models_body(&d, &body), 0);
        j = body ? parse(body) : NULL;
        w = json_object_get(json_array_get(json_object_get(j, "models"), 0), "weights");
        CHECK(strcmp(json_string_value(json_object_get(w, "source")), "seeded") == 0);
        CHECK(json_is_false(json_object_get(w, "trained")));
        CHECK_EQ(json_integer_value(json_object_get(w, "seed")), 7);
        CHECK(json_object_get(w, "repo") == NULL);
        json_decref(j);
        free(body);
}

static void test_errors(void)
{
        for (int e = 0; e < API_N_ERRORS; e++) {
                char *body = NULL;
                /* Control bytes from a client are escaped, never copied. */
                CHECK_EQ(api_error_body((enum api_error)e, "bad \"x\"\n\x01", &body), 0);
                json_t *j = body ? parse(body) : NULL;
                json_t *o = json_object_get(j, "error");
                CHECK(strcmp(json_string_value(json_object_get(o, "code")), api_error_code((enum api_error)e)) == 0);
                const char *m = json_string_value(json_object_get(o, "message"));
                CHECK_MSG(m && !strchr(m, '\n') && !strchr(m, '\x01'), "message not clean: %s", body);
                json_decref(j);
                free(body);
        }
}

int main(void)
{
        test_classify();
        test_top_k();
        test_labels_file();
        test_labels_hub_config();
        test_label_caps();
        test_models_sources();
        test_errors();
        return CHECK_DONE();
}

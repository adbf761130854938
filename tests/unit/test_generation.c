/* Unit test of the model generation (src/server/generation.c): it owns
 * copies of where its weights came from, and refuses to build answers
 * before it has a model, a batcher and labels. */
#include "check.h"
#include "generation.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void test_weights_are_copied(void)
{
        struct generation *g = NULL;
        char path[] = "/cache/models--timm--x/snapshots/abc/model.safetensors", repo[] = "timm/x", rev[] = "main",
             commit[] = "0123456789abcdef0123456789abcdef01234567", file[] = "model.safetensors",
             sha[65] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        struct api_weights src = { .source = API_WEIGHTS_HUB, .path = path, .sha256 = sha, .seed = -1,
                                   .repo = repo, .revision = rev, .commit = commit, .file = file };

        REQUIRE(gen_new(&g) == 0);
        CHECK(g->model == NULL && g->weights == NULL);
        CHECK_EQ(gen_build_answers(g, &(struct gen_limits){ .deadline_ms = 1, .max_images = 1 }), -EINVAL);
        REQUIRE(gen_set_weights(g, "hf://timm/x", &src) == 0);
        /* The caller's strings may go: the generation kept its own. */
        memset(path, 'x', sizeof path - 1);
        memset(repo, 'x', sizeof repo - 1);
        memset(commit, 'x', sizeof commit - 1);
        memset(sha, 'x', 64);
        CHECK(strcmp(g->weights, "hf://timm/x") == 0);
        CHECK(strcmp(g->source.path, "/cache/models--timm--x/snapshots/abc/model.safetensors") == 0);
        CHECK(strcmp(g->source.repo, "timm/x") == 0 && strcmp(g->source.revision, "main") == 0);
        CHECK(strcmp(g->source.commit, "0123456789abcdef0123456789abcdef01234567") == 0);
        CHECK(strcmp(g->source.file, "model.safetensors") == 0);
        CHECK(g->source.sha256 == g->sha256 && strncmp(g->sha256, "e3b0c442", 8) == 0);
        CHECK_EQ(g->source.source, API_WEIGHTS_HUB);
        CHECK_EQ(g->source.seed, -1);

        /* Set again (a local file): what is not given is NULL, not left over. */
        struct api_weights local = { .source = API_WEIGHTS_FILE, .path = "/var/lib/w.safetensors", .seed = 7 };
        REQUIRE(gen_set_weights(g, "/var/lib/w.safetensors", &local) == 0);
        CHECK(strcmp(g->source.path, "/var/lib/w.safetensors") == 0);
        CHECK(g->source.repo == NULL && g->source.revision == NULL && g->source.commit == NULL &&
              g->source.file == NULL);
        CHECK(g->sha256[0] == '\0' && g->source.seed == 7);
        CHECK(gen_free(g) == NULL);
        CHECK(gen_free(NULL) == NULL);
}

int main(void)
{
        test_weights_are_copied();
        return CHECK_DONE();
}

/* Unit tests of arch, model, npy, the public helpers and the engine on small
 * seeded networks. */
#include "check.h"
#include "effnet.h"
#include "npy.h"
#include "arch.h"
#include "model.h"
#include "safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/effnet-test-model-XXXXXX";

static void test_arch(void)
{
        static const struct { const char *key; int64_t params; int blocks; } want[] = {
                { "s", 21458488, 40 },  { "m", 54139356, 57 },   { "l", 118515272, 79 },
                { "xl", 208119808, 100 }, { "b0", 7139704, 21 }, { "b1", 8141052, 27 },
                { "b2", 10096086, 28 }, { "b3", 14358406, 32 }, { "rw_s", 23941296, 40 },
        };
        struct arch_block b[ARCH_MAX_BLOCKS];

        CHECK(arch_count() == 9);
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
                const struct arch_variant *v = arch_find(want[i].key);
                CHECK_MSG(v != NULL, "%s", want[i].key);
                if (!v)
                        continue;
                CHECK_MSG(arch_params(v, 1000) == want[i].params, "%s: %lld", want[i].key,
                          (long long)arch_params(v, 1000));
                CHECK_MSG(arch_blocks(v, b) == want[i].blocks, "%s: %d blocks", want[i].key, arch_blocks(v, b));
        }
        const struct arch_variant *s = arch_find("efficientnetv2-s");
        CHECK(s && arch_find("s") == s);
        CHECK(arch_find("z") == NULL);
        int n = arch_blocks(s, b);
        /* Only the first block of a stage strides or changes width. */
        for (int i = 0; i < n; i++) {
                CHECK(b[i].index == 0 || (b[i].stride == 1 && b[i].in == b[i].out));
                CHECK(b[i].residual == (b[i].stride == 1 && b[i].in == b[i].out));
                CHECK(b[i].kind == ARCH_FUSED ? b[i].se == 0 : b[i].se == b[i].in / 4);
        }
        CHECK(b[0].in == 24 && b[0].out == 24 && b[0].residual && b[0].mid == 24);
        CHECK(b[2].in == 24 && b[2].out == 48 && b[2].mid == 96 && b[2].stride == 2);
        /* B3 widths: round_filters(32 * 1.2) = 40 and the head 1536. */
        const struct arch_variant *b3 = arch_find("b3");
        CHECK(arch_stem(b3) == 40 && arch_head(b3) == 1536);
}

static void test_topk_softmax(void)
{
        float v[6] = { 0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 0.0f };
        int idx[6];
        CHECK(effnet_topk(v, 6, 3, idx) == 3);
        CHECK(idx[0] == 1 && idx[1] == 3 && idx[2] == 4); /* ties: lower index first */
        CHECK(effnet_topk(v, 6, 10, idx) == 6);
        CHECK(idx[5] == 2);
        CHECK(effnet_topk(v, 6, 0, idx) == 0);
        effnet_softmax(v, 6);
        double sum = 0;
        for (int i = 0; i < 6; i++)
                sum += v[i];
        CHECK(fabs(sum - 1.0) < 1e-6 && v[1] == v[3] && v[1] > v[4]);
        float big[2] = { 1000.0f, 0.0f };
        effnet_softmax(big, 2);
        CHECK(big[0] == 1.0f && big[1] == 0.0f);
}

static void test_npy(void)
{
        char path[128], err[256];
        float x[6] = { 1, 2, 3, 4, 5, 6 }, *y = NULL;
        int64_t shape[4] = { 2, 3 }, got[8];
        int nd = 0;

        snprintf(path, sizeof path, "%s/a.npy", dir);
        CHECK(npy_write_f32(path, x, 2, shape, err, sizeof err) == 0);
        CHECK(npy_read_f32(path, 8, err, sizeof err, &y, &nd, got) == 0);
        CHECK(nd == 2 && got[0] == 2 && got[1] == 3 && y && memcmp(x, y, sizeof x) == 0);
        free(y);
        y = NULL;
        CHECK(npy_read_f32(path, 1, err, sizeof err, &y, &nd, got) == -EBADMSG); /* too many dims */
        FILE *f = fopen(path, "wb");
        fputs("not numpy", f);
        fclose(f);
        CHECK(npy_read_f32(path, 8, err, sizeof err, &y, &nd, got) == -EBADMSG);
        CHECK(y == NULL);
}

/* Writes a .npy of version ver with header dict hdr and n data bytes. */
static void write_npy(const char *path, int ver, const char *hdr, size_t n)
{
        FILE *f = fopen(path, "wb");
        size_t hl = strlen(hdr);
        unsigned char pre[12] = { 0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)ver, 0, (unsigned char)hl,
                                  (unsigned char)(hl >> 8), (unsigned char)(hl >> 16), (unsigned char)(hl >> 24) };

        REQUIRE(f);
        fwrite(pre, 1, ver == 1 ? 10 : 12, f);
        fputs(hdr, f);
        for (size_t i = 0; i < n; i++)
                fputc(0, f);
        fclose(f);
}

/* Each check of the reader, one bad file each: code and message, and the
 * out-parameters left as they were. */
static void test_npy_errors(void)
{
#define DICT(descr, fortran, shape) "{'descr': '" descr "', 'fortran_order': " fortran ", 'shape': " shape ", }"
        static const struct {
                int ver;
                const char *hdr;
                size_t data;
                int code;
                const char *msg;
        } cases[] = {
                { 1, DICT("<f4", "False", "(2, 3)"), 24, 0, NULL },
                { 3, DICT("<f4", "False", "(2, 3)"), 24, 0, NULL },
                { 1, DICT("<f4", "False", "()"), 4, 0, NULL },
                { 4, DICT("<f4", "False", "(2, 3)"), 24, -EBADMSG, "unsupported .npy version 4" },
                { 1, DICT("<f8", "False", "(2, 3)"), 48, -EBADMSG, "dtype must be float32" },
                { 1, DICT(">f4", "False", "(2, 3)"), 24, -EBADMSG, "dtype must be float32" },
                { 1, DICT("<f4", "True", "(2, 3)"), 24, -EBADMSG, "fortran_order must be False" },
                { 1, "{'descr': '<f4', 'fortran_order': False, }", 0, -EBADMSG, "no shape" },
                { 1, DICT("<f4", "False", "[2, 3]"), 24, -EBADMSG, "no shape" },
                { 1, DICT("<f4", "False", "(2, -3)"), 24, -EBADMSG, "bad shape (at most 4 dims)" },
                { 1, DICT("<f4", "False", "(2, x)"), 24, -EBADMSG, "bad shape" },
                { 1, DICT("<f4", "False", "(1, 1, 1, 1, 1)"), 4, -EBADMSG, "bad shape (at most 4 dims)" },
                { 1, DICT("<f4", "False", "(100000000000, 100000000000)"), 0, -E2BIG, "array too large" },
                { 1, DICT("<f4", "False", "(2, 3)"), 23, -EBADMSG, "data shorter than shape" },
        };
#undef DICT
        char path[128], err[256];

        snprintf(path, sizeof path, "%s/e.npy", dir);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                float *y = NULL;
                int64_t got[4] = { -7, -7, -7, -7 };
                int nd = -7;

                write_npy(path, cases[i].ver, cases[i].hdr, cases[i].data);
                err[0] = '\0';
                int r = npy_read_f32(path, 4, err, sizeof err, &y, &nd, got);
                CHECK_EQ(r, cases[i].code);
                if (cases[i].code == 0) {
                        CHECK_MSG(y != NULL && nd >= 0, "case %zu", i);
                        free(y);
                        continue;
                }
                CHECK_MSG(y == NULL && nd == -7 && got[0] == -7, "case %zu: out-parameters written", i);
                CHECK_CONTAINS(err, cases[i].msg);
                CHECK_CONTAINS(err, path);
        }

        /* Truncated in the preamble, in the length of a version-2 header,
         * and in the header itself. */
        static const unsigned char cut[][12] = { { 0x93, 'N', 'U', 'M' },
                                                 { 0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 16, 0 },
                                                 { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 16, 0, '{', ' ' } };
        static const size_t cut_len[] = { 4, 10, 12 };
        static const char *const cut_msg[] = { "not a .npy file", "truncated header", "truncated header" };
        for (size_t i = 0; i < 3; i++) {
                FILE *f = fopen(path, "wb");
                float *y = NULL;
                int64_t got[4];
                int nd = -7;

                REQUIRE(f);
                fwrite(cut[i], 1, cut_len[i], f);
                fclose(f);
                CHECK_EQ(npy_read_f32(path, 4, err, sizeof err, &y, &nd, got), -EBADMSG);
                CHECK_CONTAINS(err, cut_msg[i]);
                CHECK(y == NULL && nd == -7);
        }

        /* A header over the 1 MiB limit is refused before it is read. */
        FILE *f = fopen(path, "wb");
        REQUIRE(f);
        fwrite((const unsigned char[]){ 0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0, 0x20, 0 }, 1, 12, f);
        fclose(f);
        float *y = NULL;
        int64_t got[4];
        int nd = -7;
        CHECK_EQ(npy_read_f32(path, 4, err, sizeof err, &y, &nd, got), -E2BIG);
        CHECK_CONTAINS(err, "header of 2097152 bytes");
        CHECK_EQ(npy_read_f32("/nonexistent/e.npy", 4, err, sizeof err, &y, &nd, got), -ENOENT);
        CHECK(y == NULL && nd == -7);
}

static int file_equal(const char *a, const char *b)
{
        FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
        int same = fa && fb, ca, cb;
        while (same && (ca = fgetc(fa)) != EOF) {
                cb = fgetc(fb);
                same = ca == cb;
        }
        if (same)
                same = fgetc(fb) == EOF;
        if (fa)
                fclose(fa);
        if (fb)
                fclose(fb);
        return same;
}

static void test_seeded_and_detection(void)
{
        char p1[128], p2[128], p3[128], err[256];
        struct model *m = NULL;

        snprintf(p1, sizeof p1, "%s/b0.safetensors", dir);
        snprintf(p2, sizeof p2, "%s/b0-again.safetensors", dir);
        snprintf(p3, sizeof p3, "%s/b0-tv.safetensors", dir);
        CHECK(model_write_seeded(p1, "b0", EFFNET_SCHEME_TIMM, 10, 5, ST_F32, 1.0, err, sizeof err) == 0);
        CHECK(model_write_seeded(p2, "b0", EFFNET_SCHEME_TIMM, 10, 5, ST_F32, 1.0, err, sizeof err) == 0);
        CHECK_MSG(file_equal(p1, p2), "same seed must give the same file");
        CHECK(model_write_seeded(p2, "b0", EFFNET_SCHEME_TIMM, 10, 6, ST_F32, 1.0, err, sizeof err) == 0);
        CHECK_MSG(!file_equal(p1, p2), "another seed must give another file");
        CHECK(model_write_seeded(p3, "b0", EFFNET_SCHEME_TORCHVISION, 10, 5, ST_BF16, 1.0, err, sizeof err) == 0);
        CHECK(model_write_seeded(p3 , "q9", EFFNET_SCHEME_TIMM, 10, 5, ST_F32, 1.0, err, sizeof err) == -EINVAL);

        CHECK_MSG(model_open(p1, NULL, err, sizeof err, &m) == 0, "%s", err);
        if (m) {
                CHECK(strcmp(m->info.variant, "efficientnetv2-b0") == 0);
                CHECK(m->info.scheme == EFFNET_SCHEME_TIMM && m->info.classes == 10);
                CHECK(m->info.padding == EFFNET_PAD_SAME && fabsf(m->info.bn_eps - 1e-3f) < 1e-9f);
                CHECK(m->info.params == arch_params(m->variant, 10));
                CHECK(m->info.preproc.size == 224 && m->info.preproc.resize == EFFNET_RESIZE_BICUBIC);
                m = model_free(m);
        }
        struct effnet_open_opts o = { .padding = EFFNET_PAD_SYMMETRIC, .bn_eps = 1e-5f };
        CHECK_MSG(model_open(p3, &o, err, sizeof err, &m) == 0, "%s", err);
        if (m) {
                CHECK(m->info.scheme == EFFNET_SCHEME_TORCHVISION && strcmp(m->info.dtype, "BF16") == 0);
                CHECK(m->info.padding == EFFNET_PAD_SYMMETRIC && m->info.bn_eps == 1e-5f);
                m = model_free(m);
        }
}

/* Rewrites src without one tensor, or with one tensor's shape changed. */
static int rewrite(const char *src, const char *dst, const char *drop, const char *reshape)
{
        struct st_file *f = NULL;
        struct st_writer *w = NULL;
        char err[256];
        float *bufs[4096] = { 0 };
        size_t nb = 0;
        int r = st_open(src, err, sizeof err, &f);
        if (r < 0 || (r = st_writer_new(&w)) < 0)
                goto out;
        for (size_t i = 0; i < st_count(f) && nb < 4096; i++) {
                const struct st_tensor *t = st_at(f, i);
                if (drop && strcmp(t->name, drop) == 0)
                        continue;
                int64_t shape[ST_MAX_DIMS];
                memcpy(shape, t->shape, sizeof shape);
                int64_t n = t->numel;
                if (reshape && strcmp(t->name, reshape) == 0) {
                        shape[0] += 1;
                        n = n / t->shape[0] * shape[0];
                }
                float *d = calloc((size_t)n + 1, sizeof(float));
                bufs[nb++] = d;
                st_to_f32(t->dtype, t->data, (size_t)(n < t->numel ? n : t->numel), d);
                if ((r = st_writer_add(w, t->name, ST_F32, t->ndim, shape, d)) < 0)
                        goto out;
        }
        r = st_writer_save(w, dst, err, sizeof err);
out:
        st_writer_free(w);
        st_free(f);
        for (size_t i = 0; i < nb; i++)
                free(bufs[i]);
        return r;
}

static void test_bad_models(void)
{
        char src[128], dst[128], err[256];
        struct model *m = NULL;

        snprintf(src, sizeof src, "%s/b0.safetensors", dir);
        snprintf(dst, sizeof dst, "%s/bad.safetensors", dir);
        CHECK(rewrite(src, dst, "blocks.3.1.se.conv_expand.bias", NULL) == 0);
        CHECK(model_open(dst, NULL, err, sizeof err, &m) == -EBADMSG);
        CHECK_MSG(strstr(err, "blocks.3.1.se.conv_expand.bias") && strstr(err, "missing"), "%s", err);
        CHECK(rewrite(src, dst, NULL, "blocks.1.0.conv_pwl.weight") == 0);
        CHECK(model_open(dst, NULL, err, sizeof err, &m) == -EBADMSG);
        CHECK_MSG(strstr(err, "blocks.1.0.conv_pwl.weight") && strstr(err, "expected [32, 64, 1, 1]"), "%s", err);
        CHECK(rewrite(src, dst, "conv_stem.weight", NULL) == 0);
        CHECK(model_open(dst, NULL, err, sizeof err, &m) == -ENOTSUP);
        CHECK(m == NULL);
}

static void test_engine(void)
{
        char path[128], err[256];
        struct effnet_model *m = NULL;
        struct effnet_exec *x2 = NULL, *x1 = NULL, *xb = NULL;
        const int size = 64, per = 3 * size * size;

        snprintf(path, sizeof path, "%s/b0.safetensors", dir);
        CHECK_MSG(effnet_model_open(path, NULL, err, sizeof err, &m) == 0, "%s", err);
        if (!m)
                return;
        struct effnet_exec_opts o2 = { .batch = 2, .threads = 1, .size = size };
        struct effnet_exec_opts o1 = { .batch = 1, .threads = 1, .size = size };
        struct effnet_exec_opts ob = { .batch = 2, .threads = 1, .size = size, .precision = EFFNET_BF16 };
        struct effnet_exec_opts bad = { .batch = 0, .threads = 1, .size = size };
        CHECK(effnet_exec_new(m, &bad, err, sizeof err, &x1) == -EINVAL && x1 == NULL);
        bad = (struct effnet_exec_opts){ .batch = 1, .size = 31 };
        CHECK(effnet_exec_new(m, &bad, err, sizeof err, &x1) == -EINVAL);
        CHECK_MSG(effnet_exec_new(m, &o2, err, sizeof err, &x2) == 0, "%s", err);
        CHECK_MSG(effnet_exec_new(m, &o1, err, sizeof err, &x1) == 0, "%s", err);
        /* bf16 runs only where the CPU has it natively; elsewhere it is
         * refused with what to use instead, and auto falls back to fp32. */
        struct effnet_cpu cpu;
        effnet_cpu_info(&cpu);
        if (!cpu.bf16) {
                err[0] = 0;
                CHECK(effnet_exec_new(m, &ob, err, sizeof err, &xb) == -ENOTSUP && xb == NULL);
                CHECK_MSG(strstr(err, "AVX512_BF16") && strstr(err, cpu.isa) && strstr(err, "fp32"), "%s", err);
                ob.precision = EFFNET_PRECISION_AUTO;
        }
        CHECK_MSG(effnet_exec_new(m, &ob, err, sizeof err, &xb) == 0, "%s", err);
        if (!x1 || !x2 || !xb)
                goto out;
        CHECK(effnet_exec_precision(xb) == (cpu.bf16 ? EFFNET_BF16 : EFFNET_FP32));
        CHECK(strcmp(effnet_exec_layout(x2), cpu.fp32_layout) == 0);
        /* Every primitive is accounted for, none by a reference kernel. */
        struct effnet_kernel k[64];
        int nk = effnet_exec_kernels(x2, k, 64), prims = 0;
        CHECK(nk > 0 && effnet_exec_kernels(x2, k, 1) == -E2BIG);
        nk = effnet_exec_kernels(x2, k, 64);
        for (int i = 0; i < nk; i++) {
                CHECK_MSG(strncmp(k[i].impl, "ref", 3) != 0, "%s", k[i].impl);
                prims += k[i].count;
        }
        CHECK_MSG(prims > 21 * 3, "%d primitives", prims);
        float *img = malloc(sizeof(float) * 2 * per), l2[20], l1[10], again[20], lb[20];
        model_smooth_images(3, 2, size, img);
        CHECK(effnet_exec_forward(x2, img, 3, l2) == -EINVAL);
        CHECK(effnet_exec_forward(x2, img, 2, l2) == 0);
        CHECK(effnet_exec_forward(x2, img, 2, again) == 0);
        CHECK_MSG(memcmp(l2, again, sizeof l2) == 0, "forward must be deterministic");
        CHECK(effnet_exec_forward(x1, img + per, 1, l1) == 0);
        double d = 0, spread = 0, db = 0;
        for (int i = 0; i < 10; i++) {
                CHECK(isfinite(l2[i]) && isfinite(l2[10 + i]));
                d = fmax(d, fabs(l1[i] - l2[10 + i]));
                spread = fmax(spread, fabs(l2[i] - l2[10 + i]));
        }
        CHECK_MSG(d < 1e-4 * (1 + spread), "image 2 alone differs from in a batch by %g", d);
        CHECK_MSG(spread > 0.1, "logits do not depend on the image (%g)", spread);
        /* n < batch: the image in slot 0 alone gives its own logits. */
        CHECK(effnet_exec_forward(x2, img + per, 1, again) == 0);
        for (int i = 0; i < 10; i++)
                d = fmax(d, fabs(again[i] - l1[i]));
        CHECK_MSG(d < 1e-4 * (1 + spread), "partial batch differs by %g", d);
        CHECK(effnet_exec_forward(xb, img, 2, lb) == 0);
        for (int i = 0; i < 20; i++)
                db = fmax(db, fabs(lb[i] - l2[i]));
        if (cpu.bf16)
                CHECK_MSG(db < 0.25 * spread, "bf16 off by %g (spread %g)", db, spread);
        else
                CHECK_MSG(db == 0, "auto without bf16 must be fp32: off by %g", db);
        CHECK(effnet_exec_bytes(x2) > effnet_exec_bytes(x1));
        free(img);
out:
        effnet_exec_free(x1);
        effnet_exec_free(x2);
        effnet_exec_free(xb);
        effnet_model_free(m);
        CHECK(effnet_exec_free(NULL) == NULL && effnet_model_free(NULL) == NULL);
}

/* A model read into memory: its file bytes are there until dropped, after
 * which executors built before keep working and new ones are refused. */
static void test_copy_and_drop(void)
{
        char path[128], err[256];
        struct effnet_model *m = NULL;
        struct effnet_exec *x = NULL, *y = NULL;
        struct effnet_open_opts oo = { .copy = 1 };
        const int size = 64;
        float img[3 * 64 * 64], before[10], after[10];
        size_t len = 0;

        snprintf(path, sizeof path, "%s/b0.safetensors", dir);
        CHECK_MSG(effnet_model_open(path, &oo, err, sizeof err, &m) == 0, "%s", err);
        if (!m)
                return;
        FILE *f = fopen(path, "rb");
        long flen = -1;
        if (f && fseek(f, 0, SEEK_END) == 0)
                flen = ftell(f);
        if (f)
                fclose(f);
        CHECK(effnet_model_file(m, &len) != NULL && (long)len == flen);
        struct effnet_exec_opts o = { .batch = 1, .threads = 1, .size = size };
        CHECK_MSG(effnet_exec_new(m, &o, err, sizeof err, &x) == 0, "%s", err);
        model_smooth_images(9, 1, size, img);
        CHECK(x && effnet_exec_forward(x, img, 1, before) == 0);
        effnet_model_drop_file(m);
        CHECK(effnet_model_file(m, &len) == NULL && len == 0);
        CHECK(effnet_exec_new(m, &o, err, sizeof err, &y) == -ESTALE && y == NULL);
        CHECK(x && effnet_exec_forward(x, img, 1, after) == 0 && memcmp(before, after, sizeof before) == 0);
        effnet_exec_free(x);
        effnet_model_free(m);
}

int main(void)
{
        if (!mkdtemp(dir)) {
                perror("mkdtemp");
                return 1;
        }
        test_arch();
        test_topk_softmax();
        test_npy();
        test_npy_errors();
        test_seeded_and_detection();
        test_bad_models();
        test_engine();
        test_copy_and_drop();
        char cmd[160];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "cannot remove %s\n", dir);
        return CHECK_DONE();
}

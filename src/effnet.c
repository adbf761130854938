/* effnet: the public libeffnet API over the model and engine modules. */
#include "effnet.h"
#include "engine.h"
#include "model.h"
#include "safetensors.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct effnet_model {
        struct model *m;
        struct eng_net *net;
};

struct effnet_exec {
        struct eng_plan *plan;
};

int effnet_model_open(const char *path, const struct effnet_open_opts *opts,
                      char *err, size_t err_len, struct effnet_model **ret_model)
{
        struct effnet_model *em = calloc(1, sizeof *em);
        int r;

        if (!em)
                return -ENOMEM;
        if ((r = model_open(path, opts, err, err_len, &em->m)) < 0 ||
            (r = eng_net_new(em->m, err, err_len, &em->net)) < 0) {
                effnet_model_free(em);
                return r;
        }
        *ret_model = em;
        return 0;
}

struct effnet_model *effnet_model_free(struct effnet_model *em)
{
        if (!em)
                return NULL;
        eng_net_free(em->net);
        model_free(em->m);
        free(em);
        return NULL;
}

const struct effnet_info *effnet_model_info(const struct effnet_model *em)
{
        return &em->m->info;
}

const void *effnet_model_file(const struct effnet_model *em, size_t *ret_len)
{
        return st_bytes(em->m->file, ret_len);
}

void effnet_model_drop_file(struct effnet_model *em)
{
        st_drop_bytes(em->m->file);
        em->m->dropped = 1;
}

int effnet_exec_new(struct effnet_model *em, const struct effnet_exec_opts *opts,
                    char *err, size_t err_len, struct effnet_exec **ret_exec)
{
        struct effnet_exec *x = calloc(1, sizeof *x);
        int size = opts->size > 0 ? opts->size : em->m->info.preproc.size;
        int r;

        if (!x)
                return -ENOMEM;
        if (em->m->dropped) {
                free(x);
                return err_set(err, err_len, -ESTALE, "the weights were released after start-up: no new executors");
        }
        int width = opts->width > 0 ? opts->width : size, precision;
        if ((r = effnet_precision_resolve(opts->precision, err, err_len, &precision)) == 0)
                r = eng_plan_new(em->net, opts->batch, size, width, precision, opts->threads, err, err_len,
                                 &x->plan);
        if (r < 0) {
                free(x);
                return r;
        }
        *ret_exec = x;
        return 0;
}

struct effnet_exec *effnet_exec_free(struct effnet_exec *x)
{
        if (!x)
                return NULL;
        eng_plan_free(x->plan);
        free(x);
        return NULL;
}

int effnet_exec_forward(struct effnet_exec *x, const float *images, int n, float *logits)
{
        return eng_plan_forward(x->plan, images, n, logits);
}

size_t effnet_exec_bytes(const struct effnet_exec *x)
{
        return eng_plan_bytes(x->plan);
}

int effnet_exec_kernels(const struct effnet_exec *x, struct effnet_kernel *ret, int max)
{
        return eng_plan_kernels(x->plan, ret, max);
}

int effnet_exec_precision(const struct effnet_exec *x)
{
        return eng_plan_precision(x->plan);
}

const char *effnet_exec_layout(const struct effnet_exec *x)
{
        return eng_plan_layout(x->plan);
}

void effnet_cpu_info(struct effnet_cpu *ret_cpu)
{
        eng_cpu_get(ret_cpu);
}

const char *effnet_onednn_version(void)
{
        return eng_onednn_version();
}

int effnet_precision_resolve(int precision, char *err, size_t err_len, int *ret_precision)
{
        struct effnet_cpu cpu;
        int r;

        eng_cpu_get(&cpu);
        if (precision == EFFNET_PRECISION_AUTO)
                precision = cpu.bf16 ? EFFNET_BF16 : EFFNET_FP32;
        if (precision != EFFNET_FP32 && precision != EFFNET_BF16)
                return err_set(err, err_len, -EINVAL, "unknown precision %d", precision);
        if ((r = eng_check_precision(precision, err, err_len)) < 0)
                return r;
        *ret_precision = precision;
        return 0;
}

static const char *const precision_names[] = { [EFFNET_FP32] = "fp32", [EFFNET_BF16] = "bf16",
                                               [EFFNET_PRECISION_AUTO] = "auto" };

const char *effnet_precision_name(int precision)
{
        return precision >= 0 && precision < (int)ARRAY_SIZE(precision_names) ? precision_names[precision] : NULL;
}

int effnet_precision_parse(const char *s, int *ret_precision)
{
        for (int i = 0; i < (int)ARRAY_SIZE(precision_names); i++)
                if (strcmp(s, precision_names[i]) == 0) {
                        *ret_precision = i;
                        return 0;
                }
        return -EINVAL;
}

void effnet_softmax(float *v, int n)
{
        float mx = -INFINITY;
        double sum = 0;

        for (int i = 0; i < n; i++)
                if (v[i] > mx)
                        mx = v[i];
        for (int i = 0; i < n; i++) {
                v[i] = expf(v[i] - mx);
                sum += v[i];
        }
        for (int i = 0; i < n; i++)
                v[i] = (float)(v[i] / sum);
}

int effnet_topk(const float *v, int n, int k, int *ret_idx)
{
        if (k > n)
                k = n;
        if (k <= 0)
                return 0;
        /* Insertion into a sorted prefix: k is small (top-5), n ~ 1000-21843. */
        int m = 0;
        for (int i = 0; i < n; i++) {
                if (m == k && !(v[i] > v[ret_idx[k - 1]]))
                        continue;
                int j = m < k ? m++ : k - 1;
                while (j > 0 && v[i] > v[ret_idx[j - 1]]) {
                        ret_idx[j] = ret_idx[j - 1];
                        j--;
                }
                ret_idx[j] = i;
        }
        return m;
}

/* The public dtypes are their own enum: st_dtype may change without
 * touching the ABI. */
static const int seeded_dtypes[] = { [EFFNET_DTYPE_F32] = ST_F32, [EFFNET_DTYPE_F16] = ST_F16,
                                     [EFFNET_DTYPE_BF16] = ST_BF16 };

int effnet_seeded_write(const char *path, const char *variant, uint64_t seed,
                        const struct effnet_seeded_opts *opts, char *err, size_t err_len)
{
        const struct effnet_seeded_opts o = opts ? *opts : (struct effnet_seeded_opts){ 0 };
        int classes = o.classes ? o.classes : 1000;
        double gain = o.gain != 0 ? o.gain : 1.0;

        if (!path || !variant)
                return err_set(err, err_len, -EINVAL, "no path or no variant");
        if (o.scheme != EFFNET_SCHEME_TIMM && o.scheme != EFFNET_SCHEME_TORCHVISION)
                return err_set(err, err_len, -EINVAL, "unknown scheme %d", o.scheme);
        if (o.dtype < 0 || o.dtype >= (int)ARRAY_SIZE(seeded_dtypes))
                return err_set(err, err_len, -EINVAL, "unknown dtype %d", o.dtype);
        if (!(gain > 0 && gain < INFINITY))
                return err_set(err, err_len, -EINVAL, "gain %g is not a positive number", gain);
        return model_write_seeded_ex(path, variant, o.scheme, classes, seed, seeded_dtypes[o.dtype], gain, o.progress,
                                     o.userdata, err, err_len);
}

void effnet_smooth_images(uint64_t seed, int n, int size, float *ret_images)
{
        model_smooth_images(seed, n, size, ret_images);
}

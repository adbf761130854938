/* engine: EfficientNetV2 forward pass on oneDNN — one primitive per layer with
 * BN folded, SiLU and residual adds fused as post-ops, blocked layouts chosen
 * by the primitives, all memory bound when a plan is built. */
#include "engine.h"
#include "model.h"
#include "util.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

/* oneDNN 2.x (Debian 12) and 3.x (Debian 13) differ in their C API. The
 * engine is written against 3.x's: memory descriptors are handles, and a
 * primitive descriptor is made straight from them. Under 2.x a handle points
 * at a heap copy of the descriptor struct. Each call that differs has one
 * wrapper here with the version test inside, and no other code asks which
 * version it has. md_t is a read-only descriptor owned by an md_set or by a
 * primitive descriptor. */
#if DNNL_VERSION_MAJOR >= 3
typedef const_dnnl_memory_desc_t md_t;
typedef dnnl_memory_desc_t md_owned_t;
#define CPU_ISA_ANY dnnl_cpu_isa_default
#else
typedef const dnnl_memory_desc_t *md_t;
typedef dnnl_memory_desc_t *md_owned_t;
#define CPU_ISA_ANY dnnl_cpu_isa_all
#endif

/* Descriptors freed together: those a plan makes while it is built, those
 * of the weights a net caches. */
struct md_set {
        md_owned_t *v;
        int n, cap;
};

static int grow(void **arr, int *cap, int need, size_t elem);

static void md_destroy(md_owned_t md)
{
#if DNNL_VERSION_MAJOR >= 3
        dnnl_memory_desc_destroy(md);
#else
        free(md);
#endif
}

static void md_set_clear(struct md_set *set)
{
        for (int i = 0; i < set->n; i++)
                md_destroy(set->v[i]);
        free(set->v);
        *set = (struct md_set){ NULL, 0, 0 };
}

/* Takes md over, destroying it on failure. */
static int md_set_add(struct md_set *set, md_owned_t md, md_t *ret_md)
{
        if (grow((void **)&set->v, &set->cap, set->n + 1, sizeof *set->v) < 0) {
                md_destroy(md);
                return -ENOMEM;
        }
        set->v[set->n++] = md;
        *ret_md = md;
        return 0;
}

/* A descriptor of dims in layout tag, owned by set. */
static int md_new(struct md_set *set, int nd, const dnnl_dims_t dims, dnnl_data_type_t dt, dnnl_format_tag_t tag,
                  md_t *ret_md)
{
        md_owned_t md = NULL;
#if DNNL_VERSION_MAJOR >= 3
        if (dnnl_memory_desc_create_with_tag(&md, nd, dims, dt, tag) != dnnl_success)
                return -EINVAL;
#else
        if (!(md = malloc(sizeof *md)))
                return -ENOMEM;
        if (dnnl_memory_desc_init_by_tag(md, nd, dims, dt, tag) != dnnl_success) {
                free(md);
                return -EINVAL;
        }
#endif
        return md_set_add(set, md, ret_md);
}

/* A copy of md owned by set (md may belong to a primitive descriptor). */
static int md_copy(struct md_set *set, md_t md, md_t *ret_md)
{
        md_owned_t c = NULL;
#if DNNL_VERSION_MAJOR >= 3
        if (dnnl_memory_desc_clone(&c, md) != dnnl_success)
                return -ENOMEM;
#else
        if (!(c = malloc(sizeof *c)))
                return -ENOMEM;
        *c = *md;
#endif
        return md_set_add(set, c, ret_md);
}

static int md_ndims(md_t md)
{
#if DNNL_VERSION_MAJOR >= 3
        int n = 0;
        dnnl_memory_desc_query(md, dnnl_query_ndims_s32, &n);
        return n;
#else
        return md->ndims;
#endif
}

/* Copies md's dimensions into ret (ndims of them). */
static void md_dims(md_t md, dnnl_dims_t ret)
{
#if DNNL_VERSION_MAJOR >= 3
        const dnnl_dims_t *d = NULL;
        memset(ret, 0, sizeof(dnnl_dims_t));
        if (dnnl_memory_desc_query(md, dnnl_query_dims, &d) == dnnl_success && d)
                memcpy(ret, *d, sizeof(dnnl_dim_t) * (size_t)md_ndims(md));
#else
        memcpy(ret, md->dims, sizeof(dnnl_dims_t));
#endif
}

static dnnl_data_type_t md_type(md_t md)
{
#if DNNL_VERSION_MAJOR >= 3
        dnnl_data_type_t dt = dnnl_data_type_undef;
        dnnl_memory_desc_query(md, dnnl_query_data_type, &dt);
        return dt;
#else
        return md->data_type;
#endif
}

/* Post-ops: 3.x dropped the eltwise scale and gave sum a zero point and a
 * type. */
static dnnl_status_t post_op_eltwise(dnnl_post_ops_t po, dnnl_alg_kind_t alg)
{
#if DNNL_VERSION_MAJOR >= 3
        return dnnl_post_ops_append_eltwise(po, alg, 1.0f, 0.0f);
#else
        return dnnl_post_ops_append_eltwise(po, 1.0f, alg, 1.0f, 0.0f);
#endif
}

/* An eltwise post-op whose result is multiplied by scale: 2.x only (the
 * requantization of an int8 output folded into its SiLU); 3.x applies the
 * destination's scale after all post-ops instead, so scale must be 1. */
static dnnl_status_t post_op_eltwise_scaled(dnnl_post_ops_t po, dnnl_alg_kind_t alg, float scale)
{
#if DNNL_VERSION_MAJOR >= 3
        if (scale != 1.0f)
                return dnnl_invalid_arguments;
        return dnnl_post_ops_append_eltwise(po, alg, 1.0f, 0.0f);
#else
        return dnnl_post_ops_append_eltwise(po, scale, alg, 1.0f, 0.0f);
#endif
}

/* dst += scale * (the value dst held before): scale 1 but in an int8 conv
 * that adds an s8 residual (int8_attr). */
static dnnl_status_t post_op_sum(dnnl_post_ops_t po, float scale)
{
#if DNNL_VERSION_MAJOR >= 3
        return dnnl_post_ops_append_sum(po, scale, 0, dnnl_data_type_undef);
#else
        return dnnl_post_ops_append_sum(po, scale);
#endif
}

/* CPU classes, from oneDNN's effective ISA (the CPU's, capped by
 * DNNL_MAX_CPU_ISA). Each names the fp32 activation layout whose kernels that
 * class has: oneDNN 2.6 has no AVX2 kernel for 16-channel blocks (a plan on
 * them runs reference code) and no Winograd below AVX-512. Measurements
 * behind each choice: docs/engine.md, "Choices per CPU class". */
struct isa_class {
        dnnl_cpu_isa_t isa;            /* the ISA bits a CPU must have */
        const char *name;              /* oneDNN's name for it */
        dnnl_format_tag_t fp32_tag;    /* activations of fp32 plans */
        int bf16;                      /* native bf16 dot products */
};

static const struct isa_class isa_classes[] = {
        { dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx", dnnl_nChw16c, 1 },
        { dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16", dnnl_nChw16c, 1 },
        { dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni", dnnl_nChw16c, 0 },
        { dnnl_cpu_isa_avx512_core, "avx512_core", dnnl_nChw16c, 0 },
        { dnnl_cpu_isa_avx2, "avx2", dnnl_nChw8c, 0 },
        /* Below AVX2 oneDNN has no jit broadcast multiply (the SE scale)
         * on 8-channel blocks, but has jit kernels for all of channels-last. */
        { dnnl_cpu_isa_avx, "avx", dnnl_nhwc, 0 },
        { dnnl_cpu_isa_sse41, "sse41", dnnl_nhwc, 0 },
        { CPU_ISA_ANY, "none", dnnl_nhwc, 0 },
};

static const struct isa_class *isa_class(void)
{
        unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
        for (size_t i = 0; i < ARRAY_SIZE(isa_classes) - 1; i++)
                if ((isa & (unsigned)isa_classes[i].isa) == (unsigned)isa_classes[i].isa)
                        return &isa_classes[i];
        return &isa_classes[ARRAY_SIZE(isa_classes) - 1];
}

/* The layout, among those plans use, that md has; any if none (or out of
 * memory, which the next step meets again). The probes go into set. */
static dnnl_format_tag_t tag_of(struct md_set *set, md_t md)
{
        static const dnnl_format_tag_t tags[] = { dnnl_nChw16c, dnnl_nChw8c, dnnl_nhwc, dnnl_nchw };
        dnnl_dims_t dims;
        md_dims(md, dims);
        for (size_t i = 0; i < ARRAY_SIZE(tags); i++) {
                md_t t;
                if (md_new(set, md_ndims(md), dims, md_type(md), tags[i], &t) == 0 && dnnl_memory_desc_equal(t, md))
                        return tags[i];
        }
        return dnnl_format_tag_any;
}

static const char *tag_name(dnnl_format_tag_t t)
{
        return t == dnnl_nhwc ? "nhwc" : t == dnnl_nChw8c ? "nChw8c" : t == dnnl_nChw16c ? "nChw16c" : "any";
}

static char onednn_version[32];

static void onednn_version_format(void)
{
        const dnnl_version_t *v = dnnl_version();
        snprintf(onednn_version, sizeof onednn_version, "%d.%d.%d", v->major, v->minor, v->patch);
}

const char *eng_onednn_version(void)
{
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, onednn_version_format);
        return onednn_version;
}

void eng_cpu_get(struct effnet_cpu *ret)
{
        const struct isa_class *c = isa_class();
        *ret = (struct effnet_cpu){ .isa = c->name, .bf16 = c->bf16, .fp32_layout = tag_name(c->fp32_tag),
                                 .bf16_layout = c->bf16 ? "nhwc" : NULL };
}

int eng_check_precision(int precision, char *err, size_t err_len)
{
        const struct isa_class *c = isa_class();
        if (precision == EFFNET_BF16 && !c->bf16)
                return err_set(err, err_len, -ENOTSUP,
                               "bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX); this one runs oneDNN's "
                               "%s kernels%s, where bf16 would be emulated and slower than fp32: use precision "
                               "fp32, or auto (bf16 where the CPU has it, fp32 elsewhere)",
                               c->name, getenv("DNNL_MAX_CPU_ISA") ? " (capped by DNNL_MAX_CPU_ISA)" : "");
        return 0;
}

/* Weights reordered into a primitive's layout, shared by all plans of a net. */
struct wcache_entry {
        const void *key;          /* the model's layer */
        md_t md;                  /* target layout and type, in the net's mds */
        void *data;               /* owned */
};

struct eng_net {
        const struct model *m;
        dnnl_engine_t eng;
        pthread_mutex_t lock;     /* guards cache and stream */
        dnnl_stream_t stream;     /* for weight reorders */
        struct wcache_entry *cache;
        int n_cache, cap_cache;
        struct md_set mds;        /* the cache's descriptors */
};

/* Activation buffers; a tensor lives in one of them. Reuse is planned so that
 * no step reads a slot it also writes, except the intended in-place ones.
 * SLOT_TMP holds a conv's input reordered into the layout the conv chose
 * (only in plans that let oneDNN choose, EFFNET_LAYOUT=any). */
enum slot { SLOT_X0, SLOT_X1, SLOT_M0, SLOT_M1, SLOT_POOL, SLOT_SE1, SLOT_SE2,
            SLOT_LOGITS, SLOT_TMP, N_SLOTS };

struct tensor {
        md_t md;                       /* in the plan's mds: only while it is built */
        int slot;
        dnnl_memory_t mem;
        float scale;                   /* s8, while built: real = scale * q */
};

#define MAX_ARGS 12
struct step {
        dnnl_primitive_t prim;
        const struct model_conv *conv; /* a convolution's step: its layer */
        int src_t;                     /* and the tensor it reads */
        size_t src_per_image;          /* elements of it per image */
        int n_args;
        int kind[MAX_ARGS];
        int tensor[MAX_ARGS];          /* -1: mem[] is fixed */
        dnnl_memory_t mem[MAX_ARGS];
        dnnl_exec_arg_t exec[MAX_ARGS];
};

struct eng_plan {
        struct eng_net *net;
        int batch, height, width, precision, threads, classes;
        dnnl_data_type_t act_dt;
        dnnl_format_tag_t act_tag;     /* layout of every activation */
        dnnl_stream_t stream;
        struct step *steps;
        int n_steps, cap_steps;
        struct tensor *tensors;
        int n_tensors, cap_tensors;
        dnnl_memory_t *owned;          /* weights, bias and scratch views */
        int n_owned, cap_owned;
        void **bufs;                   /* owned: int8 scales and biases */
        int n_bufs, cap_bufs;
        const struct eng_quant *quant; /* int8 plans: the caller's */
        int observer;                  /* fp32 channels-last, for eng_plan_observe */
        void *slot[N_SLOTS];
        size_t slot_size[N_SLOTS];
        void *scratch;
        size_t scratch_size;
        int in_tensor, logits_tensor;
        const struct isa_class *cpu;
        dnnl_primitive_attr_t attr;    /* of primitives without post-ops */
        struct md_set mds;             /* descriptors made while building */
        char layer[64];                /* the layer being built, for errors */
        char *err;
        size_t err_len;
};

#define DN(call)                                                                                 \
        do {                                                                                     \
                dnnl_status_t s_ = (call);                                                       \
                if (s_ != dnnl_success)                                                          \
                        return err_set(p->err, p->err_len, -EIO, "oneDNN: %s failed: %s (%s:%d)", \
                                       #call, dnnl_status2str(s_), __FILE__, __LINE__);          \
        } while (0)

static void *aligned_buf(size_t n)
{
        n = (n + 63) / 64 * 64;
        return aligned_alloc(64, n ? n : 64);
}

static int grow(void **arr, int *cap, int need, size_t elem)
{
        if (need <= *cap)
                return 0;
        int nc = *cap ? *cap * 2 : 64;
        while (nc < need)
                nc *= 2;
        void *n = realloc(*arr, (size_t)nc * elem);
        if (!n)
                return -ENOMEM;
        memset((char *)n + (size_t)*cap * elem, 0, (size_t)(nc - *cap) * elem);
        *arr = n;
        *cap = nc;
        return 0;
}

int eng_net_new(const struct model *m, char *err, size_t err_len, struct eng_net **ret_net)
{
        struct eng_net *net = calloc(1, sizeof *net);
        dnnl_status_t s;

        if (!net)
                return -ENOMEM;
        net->m = m;
        pthread_mutex_init(&net->lock, NULL);
        s = dnnl_engine_create(&net->eng, dnnl_cpu, 0);
        if (s == dnnl_success)
                s = dnnl_stream_create(&net->stream, net->eng, dnnl_stream_default_flags);
        if (s != dnnl_success) {
                eng_net_free(net);
                return err_set(err, err_len, -EIO, "oneDNN: cannot create CPU engine: %s", dnnl_status2str(s));
        }
        *ret_net = net;
        return 0;
}

struct eng_net *eng_net_free(struct eng_net *net)
{
        if (!net)
                return NULL;
        for (int i = 0; i < net->n_cache; i++)
                free(net->cache[i].data);
        free(net->cache);
        md_set_clear(&net->mds);
        if (net->stream)
                dnnl_stream_destroy(net->stream);
        if (net->eng)
                dnnl_engine_destroy(net->eng);
        pthread_mutex_destroy(&net->lock);
        free(net);
        return NULL;
}

/* Source of one layer's float32 weights in plain layout. */
struct wsrc {
        const void *key;                  /* the model's layer */
        const struct model_conv *conv;    /* either */
        const struct model_fc *fc;        /* or */
        md_t md;                          /* plain f32 layout of what they write */
        const float *qscales;             /* int8: [oc] per-channel scales, else NULL */
        md_t qmd;                         /* int8: md in s8 */
};

/* The cached copy of a layer's weights in layout want, or NULL. Under
 * net->lock. */
static void *cache_find(const struct eng_net *net, const void *key, md_t want)
{
        for (int i = 0; i < net->n_cache; i++)
                if (net->cache[i].key == key && dnnl_memory_desc_equal(net->cache[i].md, want))
                        return net->cache[i].data;
        return NULL;
}

/* Folds a layer's weights into plain (laid out as src->md) and reorders
 * them into data (laid out as want), on the net's stream. Under net->lock. */
static int reorder_weights(struct eng_plan *p, const struct wsrc *src, float *plain, md_t want, void *data)
{
        struct eng_net *net = p->net;
        dnnl_memory_t from = NULL, to = NULL;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_t reorder = NULL;
        int r = 0;

        if (src->conv)
                model_conv_weights(src->conv, plain);
        else
                model_fc_weights(src->fc, plain);
        md_t from_md = src->md;
        if (src->qscales) {
                /* Quantized here, in place over the folded floats, so that
                 * the rounding is ours on every oneDNN version; the reorder
                 * then only lays them out (and adds oneDNN's compensation). */
                const struct model_conv *c = src->conv;
                size_t per = (size_t)(c->ic / c->groups) * (size_t)c->k * (size_t)c->k;
                int8_t *q = (int8_t *)plain;
                for (size_t o = 0; o < (size_t)c->oc; o++)
                        for (size_t i = 0; i < per; i++) {
                                float v = nearbyintf(plain[o * per + i] / src->qscales[o]);
                                q[o * per + i] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
                        }
                from_md = src->qmd;
        }
        if (dnnl_memory_create(&from, from_md, net->eng, plain) != dnnl_success ||
            dnnl_memory_create(&to, want, net->eng, data) != dnnl_success ||
            dnnl_reorder_primitive_desc_create(&pd, from_md, net->eng, want, net->eng, NULL) != dnnl_success ||
            dnnl_primitive_create(&reorder, pd) != dnnl_success) {
                r = err_set(p->err, p->err_len, -EIO, "oneDNN: cannot reorder weights");
                goto out;
        }
        dnnl_exec_arg_t args[2] = { { DNNL_ARG_FROM, from }, { DNNL_ARG_TO, to } };
        if (dnnl_primitive_execute(reorder, net->stream, 2, args) != dnnl_success ||
            dnnl_stream_wait(net->stream) != dnnl_success)
                r = err_set(p->err, p->err_len, -EIO, "oneDNN: weight reorder failed");
out:
        if (reorder)
                dnnl_primitive_destroy(reorder);
        if (pd)
                dnnl_primitive_desc_destroy(pd);
        if (from)
                dnnl_memory_destroy(from);
        if (to)
                dnnl_memory_destroy(to);
        return r;
}

/* Returns a layer's weights in layout want, folding and reordering once per
 * (layer, layout) and caching the result in the net. */
static int net_weights(struct eng_plan *p, const struct wsrc *src, md_t want, void **ret_data)
{
        struct eng_net *net = p->net;
        float *plain = NULL;
        void *data = NULL;
        int r;

        pthread_mutex_lock(&net->lock);
        if ((data = cache_find(net, src->key, want))) {
                *ret_data = data;
                data = NULL;
                r = 0;
                goto out;
        }
        if ((r = grow((void **)&net->cache, &net->cap_cache, net->n_cache + 1, sizeof *net->cache)) < 0)
                goto out;
        data = aligned_buf(dnnl_memory_desc_get_size(want));
        plain = aligned_buf(dnnl_memory_desc_get_size(src->md));
        if (!data || !plain) {
                r = -ENOMEM;
                goto out;
        }
        md_t kept;
        if ((r = reorder_weights(p, src, plain, want, data)) < 0 || (r = md_copy(&net->mds, want, &kept)) < 0)
                goto out;
        net->cache[net->n_cache++] = (struct wcache_entry){ src->key, kept, data };
        *ret_data = data;
        data = NULL;
out:
        free(data);
        free(plain);
        pthread_mutex_unlock(&net->lock);
        return r;
}

/* A tensor of layout md (copied: md may belong to a primitive descriptor). */
static int new_tensor(struct eng_plan *p, md_t md, int slot)
{
        md_t kept;
        if (grow((void **)&p->tensors, &p->cap_tensors, p->n_tensors + 1, sizeof *p->tensors) < 0 ||
            md_copy(&p->mds, md, &kept) < 0)
                return -ENOMEM;
        p->tensors[p->n_tensors] = (struct tensor){ kept, slot, NULL, 0 };
        return p->n_tensors++;
}

/* A memory object the plan owns over fixed data (weights, bias). */
static int owned_mem(struct eng_plan *p, md_t md, void *data, dnnl_memory_t *ret)
{
        if (grow((void **)&p->owned, &p->cap_owned, p->n_owned + 1, sizeof *p->owned) < 0)
                return -ENOMEM;
        DN(dnnl_memory_create(&p->owned[p->n_owned], md, p->net->eng, data));
        *ret = p->owned[p->n_owned++];
        return 0;
}

static const char *impl_name(const_dnnl_primitive_desc_t pd)
{
        const char *impl = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
                return "unknown";
        return impl;
}

static int is_reference_kernel(const_dnnl_primitive_desc_t pd)
{
        return strncmp(impl_name(pd), "ref", 3) == 0;
}

/* A reference kernel computes the right numbers about a thousand times more
 * slowly (a V2-S forward takes minutes): a plan that would hold one for a
 * layer's compute is refused, so that a server fails at start-up with the
 * layer and ISA named instead of becoming ready and then timing out every
 * request. Reorders are exempt: their generic kernels are fast copies. */
static int refuse_reference(struct eng_plan *p, const_dnnl_primitive_desc_t pd)
{
        dnnl_primitive_kind_t kind = dnnl_undefined_primitive;
        dnnl_primitive_desc_query(pd, dnnl_query_primitive_kind, 0, &kind);
        if (kind == dnnl_reorder || !is_reference_kernel(pd))
                return 0;
        return err_set(p->err, p->err_len, -ENOTSUP,
                       "oneDNN has only a reference kernel (%s) for the %s of %s on this CPU (%s, %s activations): "
                       "it would run about 1000x slower", impl_name(pd), dnnl_prim_kind2str(kind), p->layer,
                       p->cpu->name, tag_name(p->act_tag));
}

/* Appends a step for pd (which it takes over); arguments follow with step_arg. */
static int add_step(struct eng_plan *p, dnnl_primitive_desc_t pd, struct step **ret)
{
        int r;
        if ((r = refuse_reference(p, pd)) < 0 ||
            (r = grow((void **)&p->steps, &p->cap_steps, p->n_steps + 1, sizeof *p->steps)) < 0) {
                dnnl_primitive_desc_destroy(pd);
                return r;
        }
        struct step *s = &p->steps[p->n_steps];
        memset(s, 0, sizeof *s);
        dnnl_status_t st = dnnl_primitive_create(&s->prim, pd);
        dnnl_primitive_desc_destroy(pd);
        if (st != dnnl_success)
                return err_set(p->err, p->err_len, -EIO, "oneDNN: primitive creation failed: %s",
                               dnnl_status2str(st));
        p->n_steps++;
        *ret = s;
        return 0;
}

static void step_arg(struct step *s, int kind, int tensor, dnnl_memory_t mem)
{
        s->kind[s->n_args] = kind;
        s->tensor[s->n_args] = tensor;
        s->mem[s->n_args] = mem;
        s->n_args++;
}

/* An argument of a step: a plan tensor, T_NEW for the tensor the step
 * creates, or T_FIXED with mem (weights, bias). */
#define T_FIXED (-1)
#define T_NEW (-2)
struct arg {
        int kind;
        int tensor;
        dnnl_memory_t mem;
};

/* Appends the step for pd (which it takes over, on failure too) with
 * args[n]. With dst_md, first a new tensor of that layout in dst_slot, which
 * args name T_NEW and which goes to *ret_t; without, *ret_t is untouched. */
static int emit_step(struct eng_plan *p, dnnl_primitive_desc_t pd, md_t dst_md, int dst_slot,
                     const struct arg *args, int n, int *ret_t)
{
        struct step *s;
        int dst_t = T_NEW, r;

        if (dst_md && (dst_t = new_tensor(p, dst_md, dst_slot)) < 0) {
                dnnl_primitive_desc_destroy(pd);
                return dst_t;
        }
        if ((r = add_step(p, pd, &s)) < 0)
                return r;
        for (int i = 0; i < n; i++)
                step_arg(s, args[i].kind, args[i].tensor == T_NEW ? dst_t : args[i].tensor, args[i].mem);
        if (dst_md)
                *ret_t = dst_t;
        return 0;
}

static dnnl_primitive_attr_t make_attr(void)
{
        dnnl_primitive_attr_t a = NULL;
        if (dnnl_primitive_attr_create(&a) != dnnl_success)
                return NULL;
        dnnl_primitive_attr_set_scratchpad_mode(a, dnnl_scratchpad_mode_user);
        return a;
}

/* A primitive descriptor on the first implementation oneDNN offers that is
 * not a reference kernel, or on a reference one if all are (add_step then
 * refuses it): oneDNN's own choice, except where it lists a generic "ref"
 * wrapper first. 3.x creates the descriptor on its first choice and steps
 * it on; 2.x iterates over the op descriptor. */
#if DNNL_VERSION_MAJOR >= 3
static dnnl_status_t first_fast(dnnl_status_t created, dnnl_primitive_desc_t *pd)
{
        if (created != dnnl_success)
                return created;
        while (is_reference_kernel(*pd) && dnnl_primitive_desc_next_impl(*pd) == dnnl_success)
                ;
        return dnnl_success;
}
#else
static dnnl_status_t first_fast(dnnl_status_t inited, const_dnnl_op_desc_t desc, const_dnnl_primitive_attr_t attr,
                                dnnl_engine_t eng, dnnl_primitive_desc_t *ret_pd)
{
        dnnl_primitive_desc_iterator_t it = NULL;
        dnnl_primitive_desc_t first = NULL;
        dnnl_status_t st = inited;

        if (st == dnnl_success)
                st = dnnl_primitive_desc_iterator_create(&it, desc, attr, eng, NULL);
        if (st != dnnl_success)
                return st;
        do {
                dnnl_primitive_desc_t pd = dnnl_primitive_desc_iterator_fetch(it);
                if (!pd)
                        break;
                if (!is_reference_kernel(pd)) {
                        if (first)
                                dnnl_primitive_desc_destroy(first);
                        first = pd;
                        break;
                }
                if (first)
                        dnnl_primitive_desc_destroy(pd);
                else
                        first = pd;
        } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
        dnnl_primitive_desc_iterator_destroy(it);
        if (!first)
                return dnnl_unimplemented;
        *ret_pd = first;
        return dnnl_success;
}
#endif

enum res_mode { RES_NONE, RES_SUM, RES_BINARY };

/* Output size and padding of a kxk stride-s conv along one axis. */
static void conv_geometry(int padding, int in, int k, int s, int *out, int *pl, int *pr)
{
        if (padding == EFFNET_PAD_SAME) {
                /* TensorFlow 'SAME': out = ceil(in/s), extra pixel goes after. */
                *out = (in + s - 1) / s;
                int total = (*out - 1) * s + k - in;
                if (total < 0)
                        total = 0;
                *pl = total / 2;
                *pr = total - *pl;
        } else {
                *pl = *pr = k / 2;
                *out = (in + 2 * (k / 2) - k) / s + 1;
        }
}

/* What a convolution is built from: memory descriptors (weights and output
 * as the primitive may choose them; in the plan's mds), geometry, the plain
 * weights' source. */
struct conv_descs {
        md_t src, w, b, dst;
        struct wsrc ws;
        int stride, oh, ow, plh, prh, plw, prw;
};

/* Primitive descriptors, one wrapper per kind: 2.x builds an op descriptor
 * first, 3.x takes the memory descriptors directly. */
static dnnl_status_t pd_conv(dnnl_engine_t eng, dnnl_alg_kind_t alg, const struct conv_descs *d,
                             const_dnnl_primitive_attr_t attr, dnnl_primitive_desc_t *ret_pd)
{
        dnnl_dims_t strides = { d->stride, d->stride }, padl = { d->plh, d->plw }, padr = { d->prh, d->prw };
#if DNNL_VERSION_MAJOR >= 3
        dnnl_dims_t dil = { 0, 0 };
        return first_fast(dnnl_convolution_forward_primitive_desc_create(ret_pd, eng, dnnl_forward_inference, alg,
                                                                          d->src, d->w, d->b, d->dst, strides, dil,
                                                                          padl, padr, attr),
                          ret_pd);
#else
        dnnl_convolution_desc_t desc;
        return first_fast(dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, alg, d->src, d->w, d->b,
                                                             d->dst, strides, padl, padr),
                          &desc, attr, eng, ret_pd);
#endif
}

static dnnl_status_t pd_inner_product(dnnl_engine_t eng, md_t src, md_t w, md_t b, md_t dst,
                                      const_dnnl_primitive_attr_t attr, dnnl_primitive_desc_t *ret_pd)
{
#if DNNL_VERSION_MAJOR >= 3
        return first_fast(dnnl_inner_product_forward_primitive_desc_create(ret_pd, eng, dnnl_forward_inference, src,
                                                                            w, b, dst, attr),
                          ret_pd);
#else
        dnnl_inner_product_desc_t desc;
        return first_fast(dnnl_inner_product_forward_desc_init(&desc, dnnl_forward_inference, src, w, b, dst), &desc,
                          attr, eng, ret_pd);
#endif
}

/* Average over whole [H][W] windows (kernel), no padding. */
static dnnl_status_t pd_mean_pool(dnnl_engine_t eng, md_t src, md_t dst, const dnnl_dims_t kernel,
                                  const_dnnl_primitive_attr_t attr, dnnl_primitive_desc_t *ret_pd)
{
        dnnl_dims_t strides = { 1, 1 }, dil = { 0, 0 }, pad = { 0, 0 };
#if DNNL_VERSION_MAJOR >= 3
        return first_fast(dnnl_pooling_forward_primitive_desc_create(ret_pd, eng, dnnl_forward_inference,
                                                                      dnnl_pooling_avg_exclude_padding, src, dst,
                                                                      strides, kernel, dil, pad, pad, attr),
                          ret_pd);
#else
        dnnl_pooling_v2_desc_t desc;
        return first_fast(dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference,
                                                            dnnl_pooling_avg_exclude_padding, src, dst, strides,
                                                            kernel, dil, pad, pad),
                          &desc, attr, eng, ret_pd);
#endif
}

/* dst = alg(src) in src's layout. */
static dnnl_status_t pd_eltwise(dnnl_engine_t eng, dnnl_alg_kind_t alg, md_t src, const_dnnl_primitive_attr_t attr,
                                dnnl_primitive_desc_t *ret_pd)
{
#if DNNL_VERSION_MAJOR >= 3
        return first_fast(dnnl_eltwise_forward_primitive_desc_create(ret_pd, eng, dnnl_forward_inference, alg, src,
                                                                      src, 1.0f, 0.0f, attr),
                          ret_pd);
#else
        dnnl_eltwise_desc_t desc;
        return first_fast(dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_inference, alg, src, 1.0f, 0.0f), &desc,
                          attr, eng, ret_pd);
#endif
}

static dnnl_status_t pd_binary(dnnl_engine_t eng, dnnl_alg_kind_t alg, md_t src0, md_t src1, md_t dst,
                               const_dnnl_primitive_attr_t attr, dnnl_primitive_desc_t *ret_pd)
{
#if DNNL_VERSION_MAJOR >= 3
        return first_fast(dnnl_binary_primitive_desc_create(ret_pd, eng, alg, src0, src1, dst, attr), ret_pd);
#else
        dnnl_binary_desc_t desc;
        return first_fast(dnnl_binary_desc_init(&desc, alg, src0, src1, dst), &desc, attr, eng, ret_pd);
#endif
}

/* The plan's attributes with post-ops: an eltwise alg (0: none), then the
 * residual as a sum or as a binary add of res_md, whose post-op index goes to
 * *ret_binary_idx (-1 if none). */
static int post_ops_attr(int eltwise, int res, md_t res_md, dnnl_primitive_attr_t *ret_attr, int *ret_binary_idx)
{
        dnnl_primitive_attr_t attr = make_attr();
        dnnl_post_ops_t po = NULL;
        dnnl_status_t st = dnnl_success;
        int binary_idx = -1, n_po = 0;

        if (!attr || dnnl_post_ops_create(&po) != dnnl_success) {
                if (attr)
                        dnnl_primitive_attr_destroy(attr);
                return -ENOMEM;
        }
        if (eltwise) {
                st = post_op_eltwise(po, (dnnl_alg_kind_t)eltwise);
                n_po++;
        }
        if (st == dnnl_success && res == RES_SUM) {
                st = post_op_sum(po, 1.0f);
                n_po++;
        } else if (st == dnnl_success && res == RES_BINARY) {
                st = dnnl_post_ops_append_binary(po, dnnl_binary_add, res_md);
                binary_idx = n_po++;
        }
        if (st == dnnl_success)
                st = dnnl_primitive_attr_set_post_ops(attr, po);
        dnnl_post_ops_destroy(po);
        if (st != dnnl_success) {
                dnnl_primitive_attr_destroy(attr);
                return -ENOMEM;
        }
        *ret_attr = attr;
        *ret_binary_idx = binary_idx;
        return 0;
}

/* Convolution primitive descriptor with SiLU and residual post-ops. */
static int conv_pd(struct eng_plan *p, dnnl_alg_kind_t alg, const struct conv_descs *d, int silu, int res,
                   int res_t, dnnl_primitive_desc_t *ret_pd, int *ret_binary_idx)
{
        dnnl_primitive_attr_t attr = NULL;
        int binary_idx = -1;

        if (post_ops_attr(silu ? dnnl_eltwise_swish : 0, res, res == RES_BINARY ? p->tensors[res_t].md : NULL, &attr,
                          &binary_idx) < 0)
                return -ENOMEM;
        dnnl_status_t st = pd_conv(p->net->eng, alg, d, attr, ret_pd);
        dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success)
                return -EIO;
        *ret_binary_idx = binary_idx;
        return 0;
}

/* The error for a primitive descriptor oneDNN did not make (st); the message
 * names what for. */
static int pd_failed(struct eng_plan *p, dnnl_status_t st, const char *what)
{
        return err_set(p->err, p->err_len, -EIO, "oneDNN: no %s: %s", what, dnnl_status2str(st));
}

/* x = SiLU(x), in place. */
static int add_silu(struct eng_plan *p, int x_t)
{
        dnnl_primitive_desc_t pd = NULL;
        dnnl_status_t st = pd_eltwise(p->net->eng, dnnl_eltwise_swish, p->tensors[x_t].md, p->attr, &pd);

        if (st != dnnl_success)
                return pd_failed(p, st, "SiLU");
        const struct arg args[] = { { DNNL_ARG_SRC, x_t, NULL }, { DNNL_ARG_DST, x_t, NULL } };
        return emit_step(p, pd, NULL, 0, args, 2, NULL);
}

static int add_reorder(struct eng_plan *p, int src_t, md_t to, int dst_slot, int *ret_t)
{
        dnnl_primitive_desc_t pd = NULL;
        DN(dnnl_reorder_primitive_desc_create(&pd, p->tensors[src_t].md, p->net->eng, to, p->net->eng, NULL));
        const struct arg args[] = { { DNNL_ARG_FROM, src_t, NULL }, { DNNL_ARG_TO, T_NEW, NULL } };
        return emit_step(p, pd, to, dst_slot, args, 2, ret_t);
}

/* Memory objects over a layer's weights in the layout pd chose (reordered
 * once per net) and over its bias b. Destroys pd on failure. */
static int layer_weights(struct eng_plan *p, const struct wsrc *ws, dnnl_primitive_desc_t pd, md_t bmd,
                         const float *b, dnnl_memory_t *ret_w, dnnl_memory_t *ret_b)
{
        md_t want_w = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        void *wdata;
        int r;

        if ((r = net_weights(p, ws, want_w, &wdata)) < 0 || (r = owned_mem(p, want_w, wdata, ret_w)) < 0 ||
            (r = owned_mem(p, bmd, (void *)b, ret_b)) < 0) {
                dnnl_primitive_desc_destroy(pd);
                return r;
        }
        return 0;
}

/* Descriptors of c applied to src_md: weights in src_md's type, output in
 * the plan's activations (or in place of res_t for RES_SUM). */
static int conv_describe(struct eng_plan *p, const struct model_conv *c, md_t src_md, int res, int res_t,
                         struct conv_descs *ret_descs)
{
        dnnl_dims_t sd;
        md_dims(src_md, sd);
        const int n = (int)sd[0], h = (int)sd[2], w = (int)sd[3];
        const dnnl_data_type_t wdt = md_type(src_md);
        struct conv_descs d = { .src = src_md, .ws = { .key = c, .conv = c }, .stride = c->stride };
        struct md_set *set = &p->mds;
        int r;

        conv_geometry(p->net->m->info.padding, h, c->k, c->stride, &d.oh, &d.plh, &d.prh);
        conv_geometry(p->net->m->info.padding, w, c->k, c->stride, &d.ow, &d.plw, &d.prw);
        if (c->groups > 1) {
                dnnl_dims_t wd = { c->groups, c->oc / c->groups, c->ic / c->groups, c->k, c->k };
                if ((r = md_new(set, 5, wd, wdt, dnnl_format_tag_any, &d.w)) < 0 ||
                    (r = md_new(set, 5, wd, dnnl_f32, dnnl_goihw, &d.ws.md)) < 0)
                        return r;
        } else {
                dnnl_dims_t wd = { c->oc, c->ic, c->k, c->k };
                if ((r = md_new(set, 4, wd, wdt, dnnl_format_tag_any, &d.w)) < 0 ||
                    (r = md_new(set, 4, wd, dnnl_f32, dnnl_oihw, &d.ws.md)) < 0)
                        return r;
        }
        dnnl_dims_t bd = { c->oc }, dd = { n, c->oc, d.oh, d.ow };
        if ((r = md_new(set, 1, bd, dnnl_f32, dnnl_a, &d.b)) < 0)
                return r;
        if (res == RES_SUM)
                d.dst = p->tensors[res_t].md;
        else if ((r = md_new(set, 4, dd, p->act_dt, p->act_tag, &d.dst)) < 0)
                return r;
        /* A plan that lets oneDNN choose lets each conv choose its input
         * layout too; a reorder then feeds it (add_conv). */
        if (p->act_tag == dnnl_format_tag_any && (r = md_new(set, 4, sd, wdt, dnnl_format_tag_any, &d.src)) < 0)
                return r;
        *ret_descs = d;
        return 0;
}

/* How a conv is computed. Winograd F(2,3) halves the multiplies of the
 * dense 3x3 stride-1 convs of the Fused-MBConv stages; oneDNN has it for fp32
 * on blocked layouts, without a SiLU post-op, so SiLU then runs in place
 * (wino). The residual ones keep the direct kernel: the add must follow
 * SiLU, and oneDNN's eltwise with a binary post-op is a reference kernel. A
 * direct conv whose output type differs from its weights' and that oneDNN
 * has no fast kernel for writes in the weights' type (d->dst says so), and a
 * reorder then converts (convert). */
struct conv_choice {
        dnnl_primitive_desc_t pd;
        int binary_idx, wino, convert;
};

static int conv_choose(struct eng_plan *p, const struct model_conv *c, struct conv_descs *d, int res, int res_t,
                       struct conv_choice *ret_choice)
{
        struct conv_choice ch = { NULL, -1, 0, 0 };
        const int silu = c->act == MODEL_ACT_SILU;
        int r;

        ch.wino = p->act_dt == dnnl_f32 && p->act_tag == dnnl_nChw16c && c->k == 3 && c->stride == 1 &&
                  c->groups == 1 && res == RES_NONE && silu && !getenv("EFFNET_NO_WINOGRAD");
        if (ch.wino && conv_pd(p, dnnl_convolution_winograd, d, 0, RES_NONE, -1, &ch.pd, &ch.binary_idx) < 0)
                ch.wino = 0;
        r = ch.wino ? 0 : conv_pd(p, dnnl_convolution_direct, d, silu, res, res_t, &ch.pd, &ch.binary_idx);
        ch.convert = !ch.wino && res == RES_NONE && md_type(d->dst) != md_type(d->w) &&
                     (r < 0 || is_reference_kernel(ch.pd));
        if (ch.convert) {
                dnnl_dims_t dd;
                if (r == 0)
                        dnnl_primitive_desc_destroy(ch.pd);
                md_dims(d->dst, dd);
                r = md_new(&p->mds, 4, dd, md_type(d->w), p->act_tag, &d->dst);
                if (r == 0)
                        r = conv_pd(p, dnnl_convolution_direct, d, silu, RES_NONE, -1, &ch.pd, &ch.binary_idx);
        }
        if (r < 0)
                return err_set(p->err, p->err_len, r, "oneDNN: no convolution for %dx%d %d->%d stride %d", c->k,
                               c->k, c->ic, c->oc, c->stride);
        *ret_choice = ch;
        return 0;
}

/* conv(src) + bias [+ SiLU] [+ residual] -> new tensor in dst_slot (or, for
 * RES_SUM, in place into the residual tensor). The weights take the type of
 * src, the output that of the plan's activations: an f32 src in a bf16 plan
 * (the stem) converts on the way out, through a reorder where oneDNN has no
 * fast kernel that converts by itself. */
static int add_conv_int8(struct eng_plan *p, const struct model_conv *c, const struct eng_qlayer *q, int src_t,
                         int dst_slot, int res, int res_t, float dst_scale, int *ret_t);

/* The last step is c's convolution, reading src_t (for observers). */
static void mark_conv(struct eng_plan *p, const struct model_conv *c, int src_t)
{
        struct step *s = &p->steps[p->n_steps - 1];
        md_t md = p->tensors[src_t].md;
        s->conv = c;
        s->src_t = src_t;
        s->src_per_image = dnnl_memory_desc_get_size(md) / (md_type(md) == dnnl_f32 ? 4 : 1) / (size_t)p->batch;
}

/* The quantization of c in an int8 plan, or NULL where it runs in fp32. */
static const struct eng_qlayer *quant_of(const struct eng_plan *p, const struct model_conv *c)
{
        if (p->precision != EFFNET_INT8 || !p->quant)
                return NULL;
        for (int i = 0; i < p->quant->n; i++)
                if (p->quant->v[i].conv == c)
                        return p->quant->v[i].int8 ? &p->quant->v[i] : NULL;
        return NULL;
}

/* dst_scale > 0 (int8 plans): the output is s8 with that scale, for a
 * consumer that is int8 too; a layer that stays fp32 ignores it. */
static int add_conv(struct eng_plan *p, const struct model_conv *c, int src_t, int dst_slot,
                    int res, int res_t, float dst_scale, int *ret_t)
{
        const struct eng_qlayer *q = quant_of(p, c);
        if (q)
                return add_conv_int8(p, c, q, src_t, dst_slot, res, res_t, dst_scale, ret_t);
        md_t src_md = p->tensors[src_t].md;
        struct conv_descs d;
        struct conv_choice ch = { NULL, -1, 0, 0 };
        dnnl_memory_t wmem, bmem;
        int r;

        if ((r = conv_describe(p, c, src_md, res, res_t, &d)) < 0 || (r = conv_choose(p, c, &d, res, res_t, &ch)) < 0 ||
            (r = layer_weights(p, &d.ws, ch.pd, d.b, c->b, &wmem, &bmem)) < 0)
                return r;
        md_t out_md = dnnl_primitive_desc_query_md(ch.pd, dnnl_query_dst_md, 0);
        /* A converted output passes through whichever of M0/M1 src is not in. */
        int out_slot = !ch.convert ? dst_slot : p->tensors[src_t].slot == SLOT_M0 ? SLOT_M1 : SLOT_M0;
        md_t want_src = dnnl_primitive_desc_query_md(ch.pd, dnnl_query_src_md, 0);
        if (!dnnl_memory_desc_equal(want_src, src_md) && (r = add_reorder(p, src_t, want_src, SLOT_TMP, &src_t)) < 0) {
                dnnl_primitive_desc_destroy(ch.pd);
                return r;
        }
        int dst_t = res == RES_SUM ? res_t : T_NEW;
        const struct arg args[] = { { DNNL_ARG_SRC, src_t, NULL },
                                    { DNNL_ARG_WEIGHTS, T_FIXED, wmem },
                                    { DNNL_ARG_BIAS, T_FIXED, bmem },
                                    { DNNL_ARG_DST, dst_t, NULL },
                                    { DNNL_ARG_ATTR_MULTIPLE_POST_OP(ch.binary_idx) | DNNL_ARG_SRC_1, res_t, NULL } };
        if ((r = emit_step(p, ch.pd, res == RES_SUM ? NULL : out_md, out_slot, args, ch.binary_idx >= 0 ? 5 : 4,
                           &dst_t)) < 0)
                return r;
        mark_conv(p, c, src_t);
        if (ch.wino && (r = add_silu(p, dst_t)) < 0)
                return r;
        if (ch.convert) {
                dnnl_dims_t sd, dd;
                md_t to;
                md_dims(src_md, sd);
                dd[0] = sd[0], dd[1] = c->oc, dd[2] = d.oh, dd[3] = d.ow;
                if ((r = md_new(&p->mds, 4, dd, p->act_dt, p->act_tag, &to)) < 0)
                        return r;
                return add_reorder(p, dst_t, to, dst_slot, ret_t);
        }
        *ret_t = dst_t;
        return 0;
}

/* A buffer the plan owns until it is freed (int8 scales and biases). */
static void *plan_buf(struct eng_plan *p, size_t size)
{
        void *b;
        if (grow((void **)&p->bufs, &p->cap_bufs, p->n_bufs + 1, sizeof *p->bufs) < 0 || !(b = aligned_buf(size)))
                return NULL;
        p->bufs[p->n_bufs++] = b;
        return b;
}

#if DNNL_VERSION_MAJOR >= 3
/* A memory object over a copy of v[n], for a run-time scales argument. */
static int scales_mem(struct eng_plan *p, const float *v, int n, dnnl_memory_t *ret)
{
        dnnl_dims_t d = { n };
        float *copy = plan_buf(p, sizeof(float) * (size_t)n);
        md_t md;
        int r;

        if (!copy)
                return -ENOMEM;
        memcpy(copy, v, sizeof(float) * (size_t)n);
        if ((r = md_new(&p->mds, 1, d, dnnl_f32, dnnl_a, &md)) < 0)
                return r;
        return owned_mem(p, md, copy, ret);
}
#endif

/* The attributes of a multiply whose s8 output is quantized with scale:
 * 2.x scales src0 by 1/scale, 3.x takes scale as the destination's, at run
 * time (the memory argument goes to *ret_arg). */
static int quant_mul_attr(struct eng_plan *p, float scale, dnnl_primitive_attr_t *ret_attr, struct arg *ret_arg)
{
        dnnl_primitive_attr_t attr = make_attr();
        dnnl_status_t st;
        int r = 0;

        if (!attr)
                return -ENOMEM;
#if DNNL_VERSION_MAJOR >= 3
        st = dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_DST, 0);
        if (st == dnnl_success && (r = scales_mem(p, &scale, 1, &ret_arg->mem)) == 0)
                *ret_arg = (struct arg){ DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, T_FIXED, ret_arg->mem };
#else
        float inv = 1.0f / scale;
        st = dnnl_primitive_attr_set_scales(attr, DNNL_ARG_SRC_0, 1, 0, &inv);
        *ret_arg = (struct arg){ 0, T_FIXED, NULL };
#endif
        if (st != dnnl_success || r < 0) {
                dnnl_primitive_attr_destroy(attr);
                return r < 0 ? r : -EINVAL;
        }
        *ret_attr = attr;
        return 0;
}

static const float one = 1.0f;

/* emit_step for a step that writes a new s8 tensor quantized with scale. */
static int emit_s8(struct eng_plan *p, dnnl_primitive_desc_t pd, md_t dst_md, int dst_slot, const struct arg *args,
                   int n, float scale, int *ret_t)
{
        int r = emit_step(p, pd, dst_md, dst_slot, args, n, ret_t);
        if (r == 0)
                p->tensors[*ret_t].scale = scale;
        return r;
}

/* src (f32) quantized to s8 with scale (q = round(x / scale), saturated)
 * into a new tensor of layout to in dst_slot: as a multiply by a broadcast
 * 1 with an s8 output, whose jit kernel measured several times faster per
 * byte than oneDNN's quantizing reorder (jit:uni); the reorder where there
 * is no such kernel. 2.x takes the factor as an output scale of the
 * reorder, 3.x as the destination's run-time scale. */
static int add_quantize(struct eng_plan *p, int src_t, md_t to, float scale, int dst_slot, int *ret_t)
{
        dnnl_primitive_attr_t attr = NULL;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_dims_t od = { 1, 1, 1, 1 };
        md_t omd;
        struct arg sarg;
        int r1;

        if ((r1 = md_new(&p->mds, 4, od, dnnl_f32, dnnl_nchw, &omd)) < 0 ||
            (r1 = quant_mul_attr(p, scale, &attr, &sarg)) < 0)
                return r1;
        dnnl_status_t st = pd_binary(p->net->eng, dnnl_binary_mul, p->tensors[src_t].md, omd, to, attr, &pd);
        dnnl_primitive_attr_destroy(attr);
        attr = NULL;
        if (st == dnnl_success && !is_reference_kernel(pd)) {
                dnnl_memory_t onem;
                if ((r1 = owned_mem(p, omd, (void *)&one, &onem)) < 0) {
                        dnnl_primitive_desc_destroy(pd);
                        return r1;
                }
                const struct arg args[] = { { DNNL_ARG_SRC_0, src_t, NULL }, { DNNL_ARG_SRC_1, T_FIXED, onem },
                                            { DNNL_ARG_DST, T_NEW, NULL }, sarg };
                return emit_s8(p, pd, to, dst_slot, args, sarg.mem ? 4 : 3, scale, ret_t);
        }
        if (st == dnnl_success)
                dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        st = dnnl_primitive_attr_create(&attr);
        struct arg args[3] = { { DNNL_ARG_FROM, src_t, NULL }, { DNNL_ARG_TO, T_NEW, NULL } };
        int n = 2;

#if DNNL_VERSION_MAJOR >= 3
        int r;
        if (st == dnnl_success)
                st = dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_DST, 0);
        if (st == dnnl_success && (r = scales_mem(p, &scale, 1, &args[n].mem)) < 0) {
                dnnl_primitive_attr_destroy(attr);
                return r;
        }
        args[n].kind = DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST;
        args[n++].tensor = T_FIXED;
#else
        float inv = 1.0f / scale;
        if (st == dnnl_success)
                st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &inv);
#endif
        if (st == dnnl_success)
                st = dnnl_reorder_primitive_desc_create(&pd, p->tensors[src_t].md, p->net->eng, to, p->net->eng,
                                                        attr);
        if (attr)
                dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success)
                return pd_failed(p, st, "quantizing reorder");
        return emit_s8(p, pd, to, dst_slot, args, n, scale, ret_t);
}

/* Per-output-channel scales of c's folded weights, max |w| / 127 (1 for a
 * channel of zeros), into ret[oc]. */
static int weight_scales(const struct model_conv *c, float *ret)
{
        size_t per = (size_t)(c->ic / c->groups) * (size_t)c->k * (size_t)c->k;
        float *w = malloc(sizeof(float) * per * (size_t)c->oc);

        if (!w)
                return -ENOMEM;
        model_conv_weights(c, w);
        for (size_t o = 0; o < (size_t)c->oc; o++) {
                float mx = 0;
                for (size_t i = 0; i < per; i++)
                        mx = fmaxf(mx, fabsf(w[o * per + i]));
                ret[o] = mx > 0 ? mx / 127.0f : 1.0f;
        }
        free(w);
        return 0;
}

/* The attributes of an int8 conv: real-valued output
 *   y = post_ops(s_src * s_w[oc] * acc + bias[oc]), stored as y / s_dst in s8
 * when s_dst > 0, as y in f32 otherwise. The post-ops are SiLU, then the
 * residual (sum, or binary add of res_md); a summed residual that is s8
 * (s_res > 0) holds y_old / s_res. 2.x: output scales with the bias added
 * before them (so divided by s_src * s_w here), the 1/s_dst folded into the
 * SiLU post-op's scale or into the output scales, the sum scaled into output
 * units; 3.x: per-argument scales, given as memory arguments (ret_args,
 * *ret_n of them), an unscaled bias, and DST's scale applied after the sum,
 * which adds the s8 values as they are. The bias to bind goes to *ret_bias. */
static int int8_attr(struct eng_plan *p, const struct model_conv *c, float s_src, const float *s_w, float s_dst,
                     int res, md_t res_md, float s_res, dnnl_primitive_attr_t *ret_attr, int *ret_binary_idx,
                     const float **ret_bias, struct arg *ret_args, int *ret_n)
{
        float sum_scale = 1.0f;
        const int silu = c->act == MODEL_ACT_SILU;
        dnnl_primitive_attr_t attr = make_attr();
        dnnl_post_ops_t po = NULL;
        dnnl_status_t st = dnnl_success;
        int binary_idx = -1, n_po = 0, n = 0, r = -ENOMEM;
        const float *bias = c->b;

        if (!attr || dnnl_post_ops_create(&po) != dnnl_success)
                goto fail;
#if DNNL_VERSION_MAJOR >= 3
        float one_dst = s_dst;
        st = dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_SRC, 0);
        if (st == dnnl_success)
                st = dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_WEIGHTS, c->groups > 1 ? 3 : 1);
        if (st == dnnl_success && s_dst > 0)
                st = dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_DST, 0);
        if (st != dnnl_success)
                goto fail;
        if ((r = scales_mem(p, &s_src, 1, &ret_args[n].mem)) < 0)
                goto fail;
        ret_args[n].kind = DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC;
        ret_args[n++].tensor = T_FIXED;
        if ((r = scales_mem(p, s_w, c->oc, &ret_args[n].mem)) < 0)
                goto fail;
        ret_args[n].kind = DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS;
        ret_args[n++].tensor = T_FIXED;
        if (s_dst > 0) {
                if ((r = scales_mem(p, &one_dst, 1, &ret_args[n].mem)) < 0)
                        goto fail;
                ret_args[n].kind = DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST;
                ret_args[n++].tensor = T_FIXED;
        }
        if (silu)
                st = post_op_eltwise_scaled(po, dnnl_eltwise_swish, 1.0f);
        if (s_res > 0)
                sum_scale = s_res;
#else
        float *os = plan_buf(p, sizeof(float) * (size_t)c->oc), *b = plan_buf(p, sizeof(float) * (size_t)c->oc);
        if (!os || !b)
                goto fail;
        for (int o = 0; o < c->oc; o++) {
                float a = s_src * s_w[o];
                os[o] = s_dst > 0 && !silu ? a / s_dst : a;
                b[o] = c->b[o] / a;
        }
        bias = b;
        st = dnnl_primitive_attr_set_output_scales(attr, c->oc, 1 << 1, os);
        if (st == dnnl_success && silu)
                st = post_op_eltwise_scaled(po, dnnl_eltwise_swish, s_dst > 0 ? 1.0f / s_dst : 1.0f);
        if (s_res > 0)
                sum_scale = s_dst > 0 ? s_res / s_dst : s_res;
#endif
        if (silu)
                n_po++;
        if (st == dnnl_success && res == RES_SUM) {
                st = post_op_sum(po, sum_scale);
                n_po++;
        } else if (st == dnnl_success && res == RES_BINARY) {
                st = dnnl_post_ops_append_binary(po, dnnl_binary_add, res_md);
                binary_idx = n_po++;
        }
        if (st == dnnl_success)
                st = dnnl_primitive_attr_set_post_ops(attr, po);
        if (st != dnnl_success) {
                r = -EINVAL;
                goto fail;
        }
        dnnl_post_ops_destroy(po);
        *ret_attr = attr;
        *ret_binary_idx = binary_idx;
        *ret_bias = bias;
        *ret_n = n;
        return 0;
fail:
        if (po)
                dnnl_post_ops_destroy(po);
        if (attr)
                dnnl_primitive_attr_destroy(attr);
        return err_set(p->err, p->err_len, r, "oneDNN: cannot set the int8 attributes of %s", p->layer);
}

/* conv(src) in int8 [+ SiLU] [+ residual]: an f32 src is first quantized
 * with the layer's scale into SLOT_TMP (an s8 src comes from an int8
 * producer that wrote it with that scale); s8 weights with per-channel
 * scales; an s8 output with dst_scale when dst_scale > 0, else f32. A
 * residual summed in place keeps its type: an s8 one takes dst_scale. */
static int add_conv_int8(struct eng_plan *p, const struct model_conv *c, const struct eng_qlayer *q, int src_t,
                         int dst_slot, int res, int res_t, float dst_scale, int *ret_t)
{
        dnnl_primitive_attr_t attr = NULL;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_memory_t wmem, bmem;
        struct conv_descs d;
        struct arg args[MAX_ARGS];
        const float *bias = NULL;
        dnnl_dims_t sd;
        int binary_idx = -1, n_scales = 0, r;

        md_dims(p->tensors[src_t].md, sd);
        if (md_type(p->tensors[src_t].md) == dnnl_s8 && p->tensors[src_t].scale != q->src_scale)
                return err_set(p->err, p->err_len, -EINVAL, "int8 plan: the input of %s is s8 at scale %g, not %g",
                               p->layer, (double)p->tensors[src_t].scale, (double)q->src_scale);
        if (md_type(p->tensors[src_t].md) != dnnl_s8) {
                md_t qmd;
                if ((r = md_new(&p->mds, 4, sd, dnnl_s8, p->act_tag, &qmd)) < 0 ||
                    (r = add_quantize(p, src_t, qmd, q->src_scale, SLOT_TMP, &src_t)) < 0)
                        return r;
        }
        if ((r = conv_describe(p, c, p->tensors[src_t].md, res, res_t, &d)) < 0)
                return r;
        const float res_scale = res == RES_SUM ? p->tensors[res_t].scale : 0;
        if (dst_scale > 0 && res == RES_NONE) {
                dnnl_dims_t dd = { sd[0], c->oc, d.oh, d.ow };
                if ((r = md_new(&p->mds, 4, dd, dnnl_s8, p->act_tag, &d.dst)) < 0)
                        return r;
        } else if (res_scale > 0) {
                if (dst_scale <= 0)
                        return err_set(p->err, p->err_len, -EINVAL,
                                       "int8 plan: %s adds an s8 residual in place but has no output scale", p->layer);
        } else {
                dst_scale = 0;
        }
        float *s_w = plan_buf(p, sizeof(float) * (size_t)c->oc);
        if (!s_w)
                return -ENOMEM;
        if ((r = weight_scales(c, s_w)) < 0)
                return r;
        d.ws.qscales = s_w;
        dnnl_dims_t wd;
        md_dims(d.ws.md, wd);
        if ((r = md_new(&p->mds, md_ndims(d.ws.md), wd, dnnl_s8, c->groups > 1 ? dnnl_goihw : dnnl_oihw,
                        &d.ws.qmd)) < 0)
                return r;
        if ((r = int8_attr(p, c, q->src_scale, s_w, dst_scale, res, res == RES_BINARY ? p->tensors[res_t].md : NULL,
                           res_scale, &attr, &binary_idx, &bias, args + 5, &n_scales)) < 0)
                return r;
        dnnl_status_t st = pd_conv(p->net->eng, dnnl_convolution_direct, &d, attr, &pd);
        dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success)
                return err_set(p->err, p->err_len, -EIO, "oneDNN: no int8 convolution for %dx%d %d->%d stride %d of %s: %s",
                               c->k, c->k, c->ic, c->oc, c->stride, p->layer, dnnl_status2str(st));
        if ((r = layer_weights(p, &d.ws, pd, d.b, bias, &wmem, &bmem)) < 0)
                return r;
        int dst_t = res == RES_SUM ? res_t : T_NEW, n = 0;
        args[n++] = (struct arg){ DNNL_ARG_SRC, src_t, NULL };
        args[n++] = (struct arg){ DNNL_ARG_WEIGHTS, T_FIXED, wmem };
        args[n++] = (struct arg){ DNNL_ARG_BIAS, T_FIXED, bmem };
        args[n++] = (struct arg){ DNNL_ARG_DST, dst_t, NULL };
        if (binary_idx >= 0)
                args[n++] = (struct arg){ DNNL_ARG_ATTR_MULTIPLE_POST_OP(binary_idx) | DNNL_ARG_SRC_1, res_t, NULL };
        memmove(args + n, args + 5, sizeof *args * (size_t)n_scales);
        n += n_scales;
        md_t out_md = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        if ((r = emit_step(p, pd, res == RES_SUM ? NULL : out_md, dst_slot, args, n, &dst_t)) < 0)
                return r;
        p->tensors[dst_t].scale = dst_scale;
        mark_conv(p, c, src_t);
        *ret_t = dst_t;
        return 0;
}

/* Mean over H and W: [N][C][H][W] -> [N][C][1][1] float. */
static int add_global_pool(struct eng_plan *p, int src_t, int dst_slot, int *ret_t)
{
        md_t src_md = p->tensors[src_t].md, dmd;
        dnnl_dims_t sd;
        md_dims(src_md, sd);
        dnnl_dims_t dd = { sd[0], sd[1], 1, 1 }, kernel = { sd[2], sd[3] };
        dnnl_primitive_desc_t pd = NULL;
        dnnl_status_t st = dnnl_runtime_error;
        int r;

        /* Float output keeps the SE and classifier inputs exact in bf16 plans;
         * fall back to the activation type where oneDNN has no such kernel. */
        dnnl_data_type_t dts[2] = { dnnl_f32, p->act_dt };
        for (int i = 0; i < 2 && st != dnnl_success; i++) {
                if ((r = md_new(&p->mds, 4, dd, dts[i], dnnl_format_tag_any, &dmd)) < 0)
                        return r;
                st = pd_mean_pool(p->net->eng, src_md, dmd, kernel, p->attr, &pd);
        }
        if (st != dnnl_success)
                return pd_failed(p, st, "global pooling");
        const struct arg args[] = { { DNNL_ARG_SRC, src_t, NULL }, { DNNL_ARG_DST, T_NEW, NULL } };
        return emit_step(p, pd, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), dst_slot, args, 2, ret_t);
}

/* The pooled t ([N][C][1][1]) as a plain [N][C] tensor over the same bytes,
 * or t itself if its layout pads C. Inner products get the 2-D view: oneDNN
 * 3.x has only a reference kernel for a 4-D channels-last source below AVX2. */
static int flat_view(struct eng_plan *p, int t, int *ret_t)
{
        md_t md = p->tensors[t].md, flat;
        dnnl_dims_t d;
        int r;

        md_dims(md, d);
        if ((r = md_new(&p->mds, 2, d, md_type(md), dnnl_nc, &flat)) < 0)
                return r;
        if (tag_of(&p->mds, md) == dnnl_format_tag_any ||
            dnnl_memory_desc_get_size(flat) != dnnl_memory_desc_get_size(md)) {
                *ret_t = t;
                return 0;
        }
        if ((r = new_tensor(p, flat, p->tensors[t].slot)) < 0)
                return r;
        *ret_t = r;
        return 0;
}

/* Fully connected: src (4D [N][C][1][1] any layout, or 2D [N][C]) -> [N][out]
 * float, plain; with an optional eltwise post-op. */
static int add_fc(struct eng_plan *p, const struct model_fc *fc, int src_t, int dst_slot, int alg,
                  int *ret_t)
{
        md_t src_md = p->tensors[src_t].md, wmd, bmd, dmd;
        struct wsrc ws = { .key = fc, .fc = fc };
        dnnl_data_type_t wdt = md_type(src_md) == dnnl_bf16 ? dnnl_bf16 : dnnl_f32;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_memory_t wmem, bmem;
        dnnl_dims_t sd;
        int binary_idx, r;

        md_dims(src_md, sd);
        if (md_ndims(src_md) == 4) {
                dnnl_dims_t wd = { fc->out, fc->in, 1, 1 };
                if ((r = md_new(&p->mds, 4, wd, wdt, dnnl_format_tag_any, &wmd)) < 0 ||
                    (r = md_new(&p->mds, 4, wd, dnnl_f32, dnnl_oihw, &ws.md)) < 0)
                        return r;
        } else {
                dnnl_dims_t wd = { fc->out, fc->in };
                if ((r = md_new(&p->mds, 2, wd, wdt, dnnl_format_tag_any, &wmd)) < 0 ||
                    (r = md_new(&p->mds, 2, wd, dnnl_f32, dnnl_oi, &ws.md)) < 0)
                        return r;
        }
        dnnl_dims_t bd = { fc->out }, dd = { sd[0], fc->out };
        if ((r = md_new(&p->mds, 1, bd, dnnl_f32, dnnl_a, &bmd)) < 0 ||
            (r = md_new(&p->mds, 2, dd, dnnl_f32, dnnl_nc, &dmd)) < 0)
                return r;
        if (post_ops_attr(alg, RES_NONE, NULL, &attr, &binary_idx) < 0)
                return -ENOMEM;

        dnnl_primitive_desc_t pd = NULL;
        dnnl_status_t st = pd_inner_product(p->net->eng, src_md, wmd, bmd, dmd, attr, &pd);
        dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success)
                return err_set(p->err, p->err_len, -EIO, "oneDNN: no inner product %d->%d: %s", fc->in, fc->out,
                               dnnl_status2str(st));
        if ((r = layer_weights(p, &ws, pd, bmd, fc->b, &wmem, &bmem)) < 0)
                return r;
        const struct arg args[] = { { DNNL_ARG_SRC, src_t, NULL },
                                    { DNNL_ARG_WEIGHTS, T_FIXED, wmem },
                                    { DNNL_ARG_BIAS, T_FIXED, bmem },
                                    { DNNL_ARG_DST, T_NEW, NULL } };
        return emit_step(p, pd, dmd, dst_slot, args, 4, ret_t);
}

/* x[n][c][h][w] *= gates[n][c], in place. */
/* x[n][c][h][w] *= gates[n][c], in place; or, with q_scale > 0 (the next
 * conv is int8), into a new s8 tensor in SLOT_TMP quantized with q_scale
 * (*ret_t), which spares that conv a quantizing pass over x. Where oneDNN
 * has no fast kernel for the s8 form, the multiply stays in place (*ret_t =
 * x_t). */
static int add_scale(struct eng_plan *p, int x_t, int gates_t, float q_scale, int *ret_t)
{
        md_t xmd = p->tensors[x_t].md, gmd;
        dnnl_dims_t xd;
        md_dims(xmd, xd);
        dnnl_dims_t gd = { xd[0], xd[1], 1, 1 };
        int r;

        /* The [N][C] gates viewed as [N][C][1][1]: in the activations' own
         * layout when C fills whole channel blocks (always, for expand 4 or 6
         * of widths that are multiples of 8), the same bytes, and oneDNN's
         * jit kernel needs src1 in src0's layout. */
        dnnl_format_tag_t xt = tag_of(&p->mds, xmd);
        if ((r = md_new(&p->mds, 4, gd, dnnl_f32, xt == dnnl_format_tag_any ? dnnl_nchw : xt, &gmd)) < 0)
                return r;
        if (dnnl_memory_desc_get_size(gmd) != sizeof(float) * (size_t)(gd[0] * gd[1]) &&
            (r = md_new(&p->mds, 4, gd, dnnl_f32, dnnl_nchw, &gmd)) < 0)
                return r;
        int g4 = new_tensor(p, gmd, p->tensors[gates_t].slot);
        if (g4 < 0)
                return g4;

        dnnl_primitive_desc_t pd = NULL;
        dnnl_status_t st;
        if (q_scale > 0) {
                dnnl_primitive_attr_t qattr = NULL;
                struct arg sarg;
                md_t qmd;
                if ((r = md_new(&p->mds, 4, xd, dnnl_s8, p->act_tag, &qmd)) < 0 ||
                    (r = quant_mul_attr(p, q_scale, &qattr, &sarg)) < 0)
                        return r;
                st = pd_binary(p->net->eng, dnnl_binary_mul, xmd, gmd, qmd, qattr, &pd);
                dnnl_primitive_attr_destroy(qattr);
                if (st == dnnl_success && !is_reference_kernel(pd)) {
                        const struct arg args[] = { { DNNL_ARG_SRC_0, x_t, NULL }, { DNNL_ARG_SRC_1, g4, NULL },
                                                    { DNNL_ARG_DST, T_NEW, NULL }, sarg };
                        return emit_s8(p, pd, qmd, SLOT_TMP, args, sarg.mem ? 4 : 3, q_scale, ret_t);
                }
                if (st == dnnl_success)
                        dnnl_primitive_desc_destroy(pd);
                pd = NULL;
        }
        st = pd_binary(p->net->eng, dnnl_binary_mul, xmd, gmd, xmd, p->attr, &pd);
        if (st != dnnl_success)
                return pd_failed(p, st, "broadcast multiply");
        const struct arg args[] = { { DNNL_ARG_SRC_0, x_t, NULL }, { DNNL_ARG_SRC_1, g4, NULL },
                                    { DNNL_ARG_DST, x_t, NULL } };
        *ret_t = x_t;
        return emit_step(p, pd, NULL, 0, args, 3, NULL);
}

/* A Fused-MBConv of expansion 1: its one kxk conv adds the residual. */
static int single_conv(const struct model_block *b)
{
        return b->a.kind == ARCH_FUSED && b->project.oc == 0;
}

/* The scales with which the blocks write their outputs in s8 (0: f32), into
 * ret[n_blocks]. The block stream is s8 where all that reads it is int8: the
 * next block's first conv and, in a residual block, the add, which then runs
 * in place in that block's int8 project and writes s8 in turn; the last
 * block's reader is the head. The scale is that of the reading conv's input.
 * Each s8 output spares a quantizing pass and three quarters of the stream's
 * bytes; the add then sees the stream as the next conv does. A single-conv
 * block adds through a binary post-op, which takes no scale for an s8
 * addend: the stream stays f32 at both its ends. */
static void stream_scales(const struct eng_plan *p, float *ret)
{
        const struct model *m = p->net->m;
        for (int i = m->n_blocks - 1; i >= 0; i--) {
                const struct model_block *b = &m->blocks[i], *nb = i + 1 < m->n_blocks ? b + 1 : NULL;
                const struct eng_qlayer *reader = quant_of(p, nb ? &nb->conv1 : &m->head);
                int ok = reader && quant_of(p, single_conv(b) ? &b->conv1 : &b->project) &&
                         !(single_conv(b) && b->a.residual);
                if (nb)
                        ok = ok && !single_conv(nb) && (!nb->a.residual || ret[i + 1] > 0);
                ret[i] = ok ? reader->src_scale : 0;
        }
        /* A residual block whose input comes f32 adds it in f32. */
        for (int i = 0; i < m->n_blocks; i++)
                if (m->blocks[i].a.residual && (i == 0 || ret[i - 1] == 0))
                        ret[i] = 0;
}

static int build_block(struct eng_plan *p, const struct model_block *b, float out_scale, int *x_t)
{
        const int x = *x_t, xs = p->tensors[x].slot, other = xs == SLOT_X0 ? SLOT_X1 : SLOT_X0;
        int t, r;

        if (single_conv(b)) {
                /* The kxk conv reads neighbours, so it cannot add in place:
                 * the residual comes in as a binary post-op. */
                return add_conv(p, &b->conv1, x, other, b->a.residual ? RES_BINARY : RES_NONE, x, out_scale, x_t);
        }
        /* A Fused-MBConv's expansion feeds only the project conv: s8 when
         * both are int8. */
        const struct eng_qlayer *qp = quant_of(p, &b->project);
        if ((r = add_conv(p, &b->conv1, x, SLOT_M0, RES_NONE, -1,
                          qp && b->a.kind == ARCH_FUSED ? qp->src_scale : 0, &t)) < 0)
                return r;
        if (b->a.kind == ARCH_MBCONV) {
                int pooled, s1, gates;
                if ((r = add_conv(p, &b->dw, t, SLOT_M1, RES_NONE, -1, 0, &t)) < 0)
                        return r;
                if (b->se_reduce.out) {
                        if ((r = add_global_pool(p, t, SLOT_POOL, &pooled)) < 0 ||
                            (r = flat_view(p, pooled, &pooled)) < 0 ||
                            (r = add_fc(p, &b->se_reduce, pooled, SLOT_SE1, dnnl_eltwise_swish, &s1)) < 0 ||
                            (r = add_fc(p, &b->se_expand, s1, SLOT_SE2, dnnl_eltwise_logistic, &gates)) < 0 ||
                            (r = add_scale(p, t, gates, qp ? qp->src_scale : 0, &t)) < 0)
                                return r;
                }
        }
        /* 1x1 project reads only its own pixel: the residual is added in place. */
        if (b->a.residual)
                return add_conv(p, &b->project, t, xs, RES_SUM, x, out_scale, x_t);
        return add_conv(p, &b->project, t, other, RES_NONE, -1, out_scale, x_t);
}

static int build(struct eng_plan *p)
{
        const struct model *m = p->net->m;
        md_t in_md;
        dnnl_dims_t id = { p->batch, 3, p->height, p->width };
        int x, r;

        if ((r = md_new(&p->mds, 4, id, dnnl_f32, dnnl_nchw, &in_md)) < 0)
                return r;
        /* The input shares M0, free until the first block. */
        if ((p->in_tensor = x = new_tensor(p, in_md, SLOT_M0)) < 0)
                return x;
        /* Blocked kernels take the 3-channel image planar; channels-last ones
         * want it channels-last. One reorder at the edge, if any. The stem
         * stays f32 in every plan: its input is the image itself, and rounding
         * it and the 27-tap stem weights to bf16 makes a fifth of a bf16
         * plan's difference from fp32 (docs/benchmarks.md), for 0.5% of the
         * multiply-adds. */
        if (p->act_tag == dnnl_nhwc) {
                md_t md;
                if ((r = md_new(&p->mds, 4, id, dnnl_f32, dnnl_nhwc, &md)) < 0 ||
                    (r = add_reorder(p, x, md, SLOT_M1, &x)) < 0)
                        return r;
        }
        snprintf(p->layer, sizeof p->layer, "the stem");
        if ((r = add_conv(p, &m->stem, x, SLOT_X0, RES_NONE, -1, 0, &x)) < 0)
                return r;
        float *out_scales = calloc((size_t)m->n_blocks + 1, sizeof *out_scales);
        if (!out_scales)
                return -ENOMEM;
        stream_scales(p, out_scales);
        for (int i = 0; i < m->n_blocks; i++) {
                const struct model_block *b = &m->blocks[i];
                snprintf(p->layer, sizeof p->layer, "block %d (stage %d, %s)", i, b->a.stage + 1,
                         b->a.kind == ARCH_MBCONV ? "MBConv" : "Fused-MBConv");
                if ((r = build_block(p, b, out_scales[i], &x)) < 0)
                        break;
        }
        free(out_scales);
        if (r < 0)
                return r;
        int h, pooled;
        snprintf(p->layer, sizeof p->layer, "the head");
        if ((r = add_conv(p, &m->head, x, SLOT_M0, RES_NONE, -1, 0, &h)) < 0 ||
            (r = add_global_pool(p, h, SLOT_POOL, &pooled)) < 0 || (r = flat_view(p, pooled, &pooled)) < 0)
                return r;
        snprintf(p->layer, sizeof p->layer, "the classifier");
        return add_fc(p, &m->classifier, pooled, SLOT_LOGITS, 0, &p->logits_tensor);
}

/* The scratchpad a step's primitive needs (owned by the primitive). */
static md_t scratch_md(const struct step *s)
{
        const_dnnl_primitive_desc_t pd = NULL;
        if (dnnl_primitive_get_primitive_desc(s->prim, &pd) != dnnl_success)
                return NULL;
        return dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
}

/* Sizes the slots, allocates them and the scratchpad, binds every argument. */
static int bind(struct eng_plan *p)
{
        for (int i = 0; i < p->n_tensors; i++) {
                size_t sz = dnnl_memory_desc_get_size(p->tensors[i].md);
                if (sz > p->slot_size[p->tensors[i].slot])
                        p->slot_size[p->tensors[i].slot] = sz;
        }
        for (int i = 0; i < p->n_steps; i++) {
                md_t smd = scratch_md(&p->steps[i]);
                size_t sz = smd ? dnnl_memory_desc_get_size(smd) : 0;
                if (sz > p->scratch_size)
                        p->scratch_size = sz;
        }
        for (int s = 0; s < N_SLOTS; s++) {
                if (!p->slot_size[s])
                        continue;
                if (!(p->slot[s] = aligned_buf(p->slot_size[s])))
                        return -ENOMEM;
                /* Touch now so that the first request pays no page faults. */
                memset(p->slot[s], 0, p->slot_size[s]);
        }
        if (p->scratch_size && !(p->scratch = aligned_buf(p->scratch_size)))
                return -ENOMEM;
        for (int i = 0; i < p->n_tensors; i++)
                DN(dnnl_memory_create(&p->tensors[i].mem, p->tensors[i].md, p->net->eng,
                                      p->slot[p->tensors[i].slot]));
        for (int i = 0; i < p->n_steps; i++) {
                struct step *s = &p->steps[i];
                for (int a = 0; a < s->n_args; a++)
                        s->exec[a] = (dnnl_exec_arg_t){ s->kind[a],
                                                        s->tensor[a] >= 0 ? p->tensors[s->tensor[a]].mem : s->mem[a] };
                md_t smd = scratch_md(s);
                if (smd && dnnl_memory_desc_get_size(smd) > 0) {
                        dnnl_memory_t sm;
                        int r = owned_mem(p, smd, p->scratch, &sm);
                        if (r < 0)
                                return r;
                        s->exec[s->n_args++] = (dnnl_exec_arg_t){ DNNL_ARG_SCRATCHPAD, sm };
                }
        }
        return 0;
}

/* The activations' layout of a plan of precision on cpu. */
static dnnl_format_tag_t choose_layout(int precision, const struct isa_class *cpu)
{
        /* One layout from the stem to the head, so that nothing is reordered
         * between layers. bf16: channels-last, the layout of oneDNN's brgemm
         * kernels, which use AMX tiles where the CPU has them. fp32: the
         * channel blocks of the CPU class's direct kernels, which split small
         * batches between threads better (docs/engine.md).
         * EFFNET_LAYOUT=nhwc|nChw8c|nChw16c overrides, and any lets each
         * primitive choose (reordering between them), for measuring. */
        dnnl_format_tag_t tag = precision == EFFNET_BF16 ? dnnl_nhwc : cpu->fp32_tag;
        const char *lt = getenv("EFFNET_LAYOUT");
        if (lt && strcmp(lt, "nChw16c") == 0)
                tag = dnnl_nChw16c;
        else if (lt && strcmp(lt, "nChw8c") == 0)
                tag = dnnl_nChw8c;
        else if (lt && strcmp(lt, "nhwc") == 0)
                tag = dnnl_nhwc;
        else if (lt && strcmp(lt, "any") == 0)
                tag = dnnl_format_tag_any;
        return tag;
}

static int plan_new(struct eng_net *net, int batch, int height, int width, int precision,
                    const struct eng_quant *quant, int observer, int threads, char *err, size_t err_len,
                    struct eng_plan **ret_plan)
{
        struct eng_plan *p;
        int r;

        if (batch < 1 || batch > 4096)
                return err_set(err, err_len, -EINVAL, "batch %d out of range 1..4096", batch);
        if (height < 32 || height > 4096 || width < 32 || width > 4096)
                return err_set(err, err_len, -EINVAL, "input size %dx%d out of range 32..4096", height, width);
        if (precision != EFFNET_FP32 && precision != EFFNET_BF16 && precision != EFFNET_INT8)
                return err_set(err, err_len, -EINVAL, "unknown precision %d", precision);
        if (precision == EFFNET_INT8 && !quant)
                return err_set(err, err_len, -EINVAL, "int8 needs a calibration");
        if ((r = eng_check_precision(precision, err, err_len)) < 0)
                return r;
        if (!(p = calloc(1, sizeof *p)))
                return -ENOMEM;
        p->net = net;
        p->batch = batch;
        p->height = height;
        p->width = width;
        p->precision = precision;
        p->threads = threads > 0 ? threads : cpu_usable_count();
        p->classes = net->m->info.classes;
        p->act_dt = precision == EFFNET_BF16 ? dnnl_bf16 : dnnl_f32;
        p->cpu = isa_class();
        p->quant = quant;
        p->observer = observer;
        /* int8 plans and observers are channels-last: oneDNN's int8
         * convolutions all take nhwc, and an observer's tensors then have
         * no padded channels. */
        p->act_tag = observer || precision == EFFNET_INT8 ? dnnl_nhwc : choose_layout(precision, p->cpu);
        p->err = err;
        p->err_len = err_len;
        /* Kernels partition work for the thread count current at creation. */
        omp_set_num_threads(p->threads);
        if (dnnl_stream_create(&p->stream, net->eng, dnnl_stream_default_flags) != dnnl_success) {
                r = err_set(err, err_len, -EIO, "oneDNN: cannot create a stream");
                goto fail;
        }
        if (!(p->attr = make_attr())) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = build(p)) < 0 || (r = bind(p)) < 0)
                goto fail;
        /* The memory objects hold their own descriptors: the ones made while
         * building are no longer needed. */
        md_set_clear(&p->mds);
        p->err = NULL;
        p->err_len = 0;
        *ret_plan = p;
        return 0;
fail:
        if (r == -ENOMEM)
                err_set(err, err_len, r, "out of memory building a batch-%d plan", batch);
        eng_plan_free(p);
        return r;
}

int eng_plan_new(struct eng_net *net, int batch, int height, int width, int precision,
                 const struct eng_quant *quant, int threads, char *err, size_t err_len,
                 struct eng_plan **ret_plan)
{
        return plan_new(net, batch, height, width, precision, quant, 0, threads, err, err_len, ret_plan);
}

int eng_plan_new_observer(struct eng_net *net, int batch, int height, int width, int threads, char *err,
                          size_t err_len, struct eng_plan **ret_plan)
{
        return plan_new(net, batch, height, width, EFFNET_FP32, NULL, 1, threads, err, err_len, ret_plan);
}

struct eng_plan *eng_plan_free(struct eng_plan *p)
{
        if (!p)
                return NULL;
        for (int i = 0; i < p->n_steps; i++)
                if (p->steps[i].prim)
                        dnnl_primitive_destroy(p->steps[i].prim);
        for (int i = 0; i < p->n_tensors; i++)
                if (p->tensors[i].mem)
                        dnnl_memory_destroy(p->tensors[i].mem);
        for (int i = 0; i < p->n_owned; i++)
                dnnl_memory_destroy(p->owned[i]);
        for (int s = 0; s < N_SLOTS; s++)
                free(p->slot[s]);
        free(p->scratch);
        for (int i = 0; i < p->n_bufs; i++)
                free(p->bufs[i]);
        free(p->bufs);
        free(p->steps);
        free(p->tensors);
        free(p->owned);
        md_set_clear(&p->mds);
        if (p->attr)
                dnnl_primitive_attr_destroy(p->attr);
        if (p->stream)
                dnnl_stream_destroy(p->stream);
        free(p);
        return NULL;
}

/* Flush denormals to zero (FTZ) and read them as zero (DAZ) on this thread.
 * Activations of deep nets drift into the denormal range (SiLU of large
 * negative values, small SE gates), where x86 float arithmetic is many times
 * slower; values below 1.2e-38 make no difference to the logits. */
static unsigned denormals_off(void)
{
#if defined(__x86_64__) || defined(__i386__)
        unsigned old = _mm_getcsr();
        _mm_setcsr(old | 0x8040);
        return old;
#else
        return 0;
#endif
}

static void denormals_restore(unsigned csr)
{
#if defined(__x86_64__) || defined(__i386__)
        _mm_setcsr(csr);
#else
        (void)csr;
#endif
}

int eng_plan_forward(struct eng_plan *p, const float *images, int n, float *logits)
{
        int r = 0;

        if (n < 1 || n > p->batch)
                return -EINVAL;
        size_t per = (size_t)3 * p->height * p->width;
        memcpy(p->slot[SLOT_M0], images, per * sizeof(float) * (size_t)n);
        omp_set_num_threads(p->threads);
        unsigned csr = denormals_off();
        /* The OpenMP team's threads run the kernels: set the mode there too. */
#pragma omp parallel num_threads(p->threads)
        denormals_off();
        for (int i = 0; i < p->n_steps && r == 0; i++)
                if (dnnl_primitive_execute(p->steps[i].prim, p->stream, p->steps[i].n_args, p->steps[i].exec) !=
                    dnnl_success)
                        r = -EIO;
        if (r == 0 && dnnl_stream_wait(p->stream) != dnnl_success)
                r = -EIO;
        denormals_restore(csr);
        if (r == 0)
                memcpy(logits, p->slot[SLOT_LOGITS], sizeof(float) * (size_t)p->classes * (size_t)n);
        return r;
}

int eng_plan_observe(struct eng_plan *p, const float *images, int n, eng_observe_fn fn, void *userdata)
{
        int r = 0;

        if (!p->observer || n < 1 || n > p->batch)
                return -EINVAL;
        size_t per = (size_t)3 * p->height * p->width;
        memcpy(p->slot[SLOT_M0], images, per * sizeof(float) * (size_t)n);
        omp_set_num_threads(p->threads);
        unsigned csr = denormals_off();
#pragma omp parallel num_threads(p->threads)
        denormals_off();
        for (int i = 0; i < p->n_steps && r == 0; i++) {
                const struct step *s = &p->steps[i];
                if (s->conv) {
                        /* Channels-last f32, image-major: the first n images
                         * are the first n / batch of the tensor. */
                        void *data = NULL;
                        if (dnnl_stream_wait(p->stream) != dnnl_success ||
                            dnnl_memory_get_data_handle(p->tensors[s->src_t].mem, &data) != dnnl_success) {
                                r = -EIO;
                                break;
                        }
                        fn(userdata, s->conv, data, s->src_per_image * (size_t)n);
                }
                if (dnnl_primitive_execute(s->prim, p->stream, s->n_args, s->exec) != dnnl_success)
                        r = -EIO;
        }
        if (r == 0 && dnnl_stream_wait(p->stream) != dnnl_success)
                r = -EIO;
        denormals_restore(csr);
        return r;
}

size_t eng_plan_bytes(const struct eng_plan *p)
{
        size_t total = p->scratch_size;
        for (int s = 0; s < N_SLOTS; s++)
                total += p->slot_size[s];
        return total;
}

int eng_plan_kernels(const struct eng_plan *p, struct effnet_kernel *ret, int max)
{
        int n = 0;
        for (int i = 0; i < p->n_steps; i++) {
                const_dnnl_primitive_desc_t pd = NULL;
                if (dnnl_primitive_get_primitive_desc(p->steps[i].prim, &pd) != dnnl_success)
                        continue;
                const char *impl = impl_name(pd);
                int j = 0;
                while (j < n && strcmp(ret[j].impl, impl) != 0)
                        j++;
                if (j == n) {
                        if (n == max)
                                return -E2BIG;
                        ret[n++] = (struct effnet_kernel){ impl, 0 };
                }
                ret[j].count++;
        }
        return n;
}

int eng_plan_precision(const struct eng_plan *p)
{
        return p->precision;
}

const char *eng_plan_layout(const struct eng_plan *p)
{
        return tag_name(p->act_tag);
}

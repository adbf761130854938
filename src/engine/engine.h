/* engine: EfficientNetV2 forward pass on oneDNN. The only module that sees
 * dnnl.h. Knows nothing of HTTP, images or file formats.
 *
 * Usage:
 *   struct eng_net *net = NULL;  struct eng_plan *p = NULL;
 *   eng_net_new(model, err, sizeof err, &net);           // shares model's weights
 *   eng_plan_new(net, 8, 384, 384, EFFNET_BF16, 2, err, sizeof err, &p);
 *   eng_plan_forward(p, images, n, logits);   // images [n][3][384][384] NCHW
 *   p = eng_plan_free(p);  net = eng_net_free(net);
 *
 * Threading: a net is shared; eng_plan_new may run on any thread at once (the
 * weights cache is guarded by the net's lock). A plan is used by one thread
 * at a time; the forward pass allocates nothing.
 */
#ifndef EFFNET_ENGINE_H
#define EFFNET_ENGINE_H

#include <stddef.h>

#include "effnet.h"

struct model;
struct eng_net;
struct eng_plan;

/* The model must outlive the net. */
int eng_net_new(const struct model *m, char *err, size_t err_len, struct eng_net **ret_net);
struct eng_net *eng_net_free(struct eng_net *net);

/* How one convolution of an int8 plan runs. Activations are symmetric s8:
 * real value = src_scale * q. Weights get per-output-channel scales of their
 * own (max |w| / 127, computed from the folded weights). */
struct eng_qlayer {
        const struct model_conv *conv;  /* the model's layer */
        float src_scale;                /* of the conv's input, > 0 */
        int int8;                       /* 0: the layer stays fp32 */
};

/* The quantization of an int8 plan: layers not listed stay fp32 (always the
 * stem, depthwise convs, squeeze-excite and the classifier). */
struct eng_quant {
        const struct eng_qlayer *v;
        int n;
};

/* A plan for batch images of height x width, precision (enum effnet_precision),
 * run with threads OpenMP threads (0 = all usable). The net must outlive it.
 * EFFNET_INT8 needs quant (which must outlive the plan); other precisions
 * ignore it. */
int eng_plan_new(struct eng_net *net, int batch, int height, int width, int precision,
                 const struct eng_quant *quant, int threads, char *err, size_t err_len,
                 struct eng_plan **ret_plan);

/* A plan for observing activations: fp32, channels-last (no padded
 * channels), otherwise as eng_plan_new. */
int eng_plan_new_observer(struct eng_net *net, int batch, int height, int width, int threads, char *err,
                          size_t err_len, struct eng_plan **ret_plan);

/* Called with the input of every convolution of an observer plan before it
 * runs: x holds the first n images' float values, channels-last. */
typedef void (*eng_observe_fn)(void *userdata, const struct model_conv *conv, const float *x, size_t count);

/* A forward pass of an observer plan that calls fn on each conv's input. */
int eng_plan_observe(struct eng_plan *p, const float *images, int n, eng_observe_fn fn, void *userdata);
struct eng_plan *eng_plan_free(struct eng_plan *p);

/* images: float [n][3][height][width] NCHW; logits: float [n][classes]. */
int eng_plan_forward(struct eng_plan *p, const float *images, int n, float *logits);

/* Bytes of activation and scratch memory the plan allocated. */
size_t eng_plan_bytes(const struct eng_plan *p);

/* The oneDNN implementations a plan runs, each with its number of
 * primitives, into ret (max entries; names owned by the plan). Returns the
 * count written, or -E2BIG when there are more than max. */
int eng_plan_kernels(const struct eng_plan *p, struct effnet_kernel *ret, int max);

/* The precision of a plan (EFFNET_FP32, EFFNET_BF16 or EFFNET_INT8). */
int eng_plan_precision(const struct eng_plan *p);

/* The activation layout of a plan: "nChw16c", "nChw8c" or "nhwc". */
const char *eng_plan_layout(const struct eng_plan *p);

/* The version of the oneDNN library the engine runs on, "3.7.2" (static). */
const char *eng_onednn_version(void);

/* What the engine makes of this CPU (see struct effnet_cpu). */
void eng_cpu_get(struct effnet_cpu *ret);

/* 0 if precision (enum effnet_precision) runs well on this CPU; -ENOTSUP
 * with a message that says what it needs, what the CPU has and what to use
 * instead (bf16 without native bf16). */
int eng_check_precision(int precision, char *err, size_t err_len);

#endif

/* effnet: command-line tool over libeffnet (forward, bench, inspect,
 * init-weights, classify, calibrate, pull). */
#include "effnet.h"
#include "effnet/image.h"
/* Internals beyond the public API (docs/architecture.md says why): flag
 * parsers, clocks and .npy files (common), the hub's cache (hub), and the
 * server's JSON bodies (api: classify prints what effnetd answers). */
#include "npy.h"
#include "util.h"
#include "hub.h"
#include "weights.h"
#include "api.h"
#include "auth.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "effnet";

static int usage(FILE *f)
{
        fprintf(f,
                "Usage: %s COMMAND [OPTIONS]\n"
                "\n"
                "Commands:\n"
                "  forward --weights FILE --input IN.npy --output OUT.npy\n"
                "          [--precision fp32|bf16|auto|int8] [--calibration CAL] [--padding auto|same|symmetric]\n"
                "          [--bn-eps X] [--threads T]\n"
                "      Logits of a float32 NCHW batch (normalized images) as .npy.\n"
                "  bench (--weights FILE | --variant V) [--batch 1,8] [--threads T]\n"
                "          [--precision fp32|bf16|auto|int8] [--calibration CAL] [--size S] [--runs N]\n"
                "          [--warmup N] [--json]\n"
                "      Median throughput of the engine per batch size.\n"
                "  classify --weights FILE [--top-k K] [--labels FILE] [--precision fp32|bf16|auto|int8]\n"
                "          [--calibration CAL] [--threads T] IMG...\n"
                "      Top-k JSON for each image, one line each, as effnetd answers.\n"
                "  calibrate --weights FILE --images DIR|IMG... [--count N] [--held-out N]\n"
                "          [--method auto|mse|percentile|max|kl] [--threshold X] [--size S] [--threads T] -o CAL\n"
                "      int8 calibration on your images (a file for --precision int8), and how\n"
                "      far int8 moves the logits from fp32 on the images held out of it.\n"
                "  inspect FILE [--calibration CAL]\n"
                "      Scheme, variant, classes, dtype, parameters, padding, preprocessing;\n"
                "      with a calibration, which layer runs in int8 and which in fp32.\n"
                "  init-weights --variant s|m|l|xl|b0|b1|b2|b3|rw_s [--scheme timm|torchvision]\n"
                "          [--classes N] [--dtype f32|f16|bf16] --seed N -o FILE\n"
                "      Deterministic seeded weights (the embedded default).\n"
                "  pull REPO_ID [--revision R] [--file F] [--refresh] [--deadline S]\n"
                "          (or: pull hf://ORG/NAME[@R][/F])\n"
                "      Downloads a file of a Hugging Face Hub repository (default\n"
                "      model.safetensors at main) into the hub's cache, as huggingface_hub\n"
                "      does (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN), and prints its path.\n"
                "  hash-key\n"
                "      Reads an API key (one line) from standard input and prints its SHA-256,\n"
                "      a line for effnetd's api-keys-file.\n"
                "  cpu\n"
                "      oneDNN's version and ISA on this CPU (DNNL_MAX_CPU_ISA caps it), native\n"
                "      bf16, layouts and what --precision auto picks, as JSON.\n"
                "  --version, --help\n"
                "\n"
                "Wherever a command takes weights, hf://ORG/NAME[@REVISION][/FILE] names a\n"
                "file on the hub: taken from the cache, pulled first when missing.\n",
                prog);
        return f == stderr ? 2 : 0;
}

static int parse_padding(const char *s, int *ret)
{
        if (strcmp(s, "auto") == 0)
                *ret = EFFNET_PAD_AUTO;
        else if (strcmp(s, "same") == 0)
                *ret = EFFNET_PAD_SAME;
        else if (strcmp(s, "symmetric") == 0)
                *ret = EFFNET_PAD_SYMMETRIC;
        else
                return -EINVAL;
        return 0;
}

/* An int flag value in lo..hi (the message is the caller's). */
static int int_arg(const char *s, int lo, int hi, int *ret)
{
        int64_t v;
        if (parse_int("", s, lo, hi, NULL, 0, &v) < 0)
                return -EINVAL;
        *ret = (int)v;
        return 0;
}

static const char *padding_name(int p)
{
        return p == EFFNET_PAD_SAME ? "same" : "symmetric";
}

enum { OPT_PRECISION = 256, OPT_PADDING, OPT_BN_EPS, OPT_THREADS, OPT_BATCH, OPT_SIZE, OPT_RUNS,
       OPT_WARMUP, OPT_JSON, OPT_SCHEME, OPT_CLASSES, OPT_SEED, OPT_DTYPE, OPT_VARIANT, OPT_WEIGHTS,
       OPT_INPUT, OPT_OUTPUT, OPT_CALIBRATION };

static const struct option long_opts[] = {
        { "weights", required_argument, 0, OPT_WEIGHTS },   { "input", required_argument, 0, OPT_INPUT },
        { "output", required_argument, 0, OPT_OUTPUT },     { "precision", required_argument, 0, OPT_PRECISION },
        { "padding", required_argument, 0, OPT_PADDING },   { "bn-eps", required_argument, 0, OPT_BN_EPS },
        { "threads", required_argument, 0, OPT_THREADS },   { "batch", required_argument, 0, OPT_BATCH },
        { "size", required_argument, 0, OPT_SIZE },         { "runs", required_argument, 0, OPT_RUNS },
        { "warmup", required_argument, 0, OPT_WARMUP },     { "json", no_argument, 0, OPT_JSON },
        { "scheme", required_argument, 0, OPT_SCHEME },     { "classes", required_argument, 0, OPT_CLASSES },
        { "seed", required_argument, 0, OPT_SEED },         { "dtype", required_argument, 0, OPT_DTYPE },
        { "variant", required_argument, 0, OPT_VARIANT },   { "help", no_argument, 0, 'h' },
        { "calibration", required_argument, 0, OPT_CALIBRATION },
        { 0, 0, 0, 0 },
};

struct args {
        const char *weights, *input, *output, *variant, *batches, *scheme_name, *dtype_name, *calibration;
        int precision, threads, size, runs, warmup, json, classes, have_seed;
        unsigned long long seed;
        struct effnet_open_opts open;
};

static int parse_args(int argc, char **argv, struct args *a)
{
        int c;
        *a = (struct args){ .batches = "1", .runs = 10, .warmup = 2, .classes = 1000, .dtype_name = "f32" };
        optind = 1;
        while ((c = getopt_long(argc, argv, "o:h", long_opts, NULL)) != -1) {
                int bad = 0;
                switch (c) {
                case OPT_WEIGHTS: a->weights = optarg; break;
                case OPT_INPUT: a->input = optarg; break;
                case 'o':
                case OPT_OUTPUT: a->output = optarg; break;
                case OPT_VARIANT: a->variant = optarg; break;
                case OPT_CALIBRATION: a->calibration = optarg; break;
                case OPT_BATCH: a->batches = optarg; break;
                case OPT_SCHEME: a->scheme_name = optarg; break;
                case OPT_DTYPE: a->dtype_name = optarg; break;
                case OPT_JSON: a->json = 1; break;
                case OPT_PRECISION: bad = effnet_precision_parse(optarg, &a->precision); break;
                case OPT_PADDING: bad = parse_padding(optarg, &a->open.padding); break;
                case OPT_THREADS: bad = int_arg(optarg, 0, 1024, &a->threads); break;
                case OPT_SIZE: bad = int_arg(optarg, 32, 4096, &a->size); break;
                case OPT_RUNS: bad = int_arg(optarg, 1, 100000, &a->runs); break;
                case OPT_WARMUP: bad = int_arg(optarg, 0, 100000, &a->warmup); break;
                case OPT_CLASSES: bad = int_arg(optarg, 1, 1000000, &a->classes); break;
                case OPT_BN_EPS: {
                        /* The bounds of the daemon's bn-eps setting; 0 = from the weights. */
                        double eps;
                        bad = parse_double("", optarg, 0, 0.1, NULL, 0, &eps);
                        a->open.bn_eps = (float)eps;
                        break;
                }
                case OPT_SEED: {
                        int64_t seed;
                        bad = parse_int("", optarg, 0, INT64_MAX, NULL, 0, &seed);
                        a->seed = (unsigned long long)seed;
                        a->have_seed = 1;
                        break;
                }
                case 'h': return usage(stdout), 1;
                default: return -EINVAL;
                }
                if (bad) {
                        const char *name = "?";
                        for (const struct option *o = long_opts; o->name; o++)
                                if (o->val == c)
                                        name = o->name;
                        fprintf(stderr, "%s: invalid value '%s' for --%s\n", prog, optarg, name);
                        return -EINVAL;
                }
        }
        return 0;
}

/* A progress bar on stderr while a pull downloads, only when stderr is a
 * terminal: scripts and logs get nothing. */
struct bar {
        bool tty;
        int64_t t0;
        const char *name;
};

static void on_progress(void *userdata, const struct hub_progress *p)
{
        struct bar *b = userdata;
        const int width = 30;

        if (!b->tty)
                return;
        if (p->started)
                b->t0 = time_now_ns();
        double secs = (double)(time_now_ns() - b->t0) / 1e9;
        double frac = p->total > 0 ? (double)p->done / (double)p->total : 1.0;
        double rate = secs > 0 ? (double)(p->done - p->resumed) / secs : 0;
        int fill = (int)(frac * width);
        char bar[64];
        for (int i = 0; i < width; i++)
                bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r%.30s %3.0f%% [%s] %.1f/%.1f MB %.1f MB/s%s", b->name, frac * 100, bar,
                (double)p->done / 1e6, (double)p->total / 1e6, rate / 1e6, p->finished ? "\n" : "  ");
        fflush(stderr);
}

/* A status line on stderr for long work (init-weights, bench), redrawn in
 * place, only on a terminal. */
struct status_line {
        bool tty;
        bool shown;
};

static void status_show(struct status_line *sl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void status_show(struct status_line *sl, const char *fmt, ...)
{
        va_list ap;

        if (!sl->tty)
                return;
        fprintf(stderr, "\r\033[K");   /* start of line, erased */
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fflush(stderr);
        sl->shown = true;
}

/* Erases the line, so that what follows starts clean. */
static void status_clear(struct status_line *sl)
{
        if (sl->tty && sl->shown)
                fprintf(stderr, "\r\033[K");
        sl->shown = false;
}

struct init_progress {
        struct status_line sl;
        int pass, passes;
        int64_t t0;
};

static void on_init_progress(void *userdata, int done, int total)
{
        struct init_progress *ip = userdata;
        status_show(&ip->sl, "init-weights: pass %d of %d, calibrating block %d of %d, %.0f s", ip->pass, ip->passes,
                    done, total, (double)(time_now_ns() - ip->t0) / 1e9);
}

/* The cached file of ref, pulled when missing (giving up after deadline_s,
 * 0: the hub's default); a bar on a terminal. */
static int pull(const struct hub_ref *ref, bool refresh, int64_t deadline_s, struct hub_file **ret)
{
        char err[1024];
        const char *base = strrchr(ref->file, '/');
        struct bar b = { .tty = isatty(STDERR_FILENO) == 1, .name = base ? base + 1 : ref->file };
        struct hub_opts o = { .refresh = refresh, .progress = on_progress, .userdata = &b, .deadline_s = deadline_s,
                              .deadline_name = "--deadline" };

        int r = hub_fetch(ref, &o, err, sizeof err, ret);
        if (r < 0)
                fprintf(stderr, "%s: %s\n", prog, err);
        return r;
}

/* The repository's config.json next to the weights, at the same commit,
 * into the cache too: effnetd takes class names from it (timm writes
 * label_names there) and, when the weights come from the cache, looks for
 * it there only. Quiet: many repositories have none. */
static void pull_config(const struct hub_ref *weights_ref, const struct hub_file *wf, int64_t deadline_s)
{
        struct hub_opts o = { .deadline_s = deadline_s, .deadline_name = "--deadline" };
        char err[1024], *path = NULL;
        int r = weights_fetch_config(weights_ref, wf->commit, &o, err, sizeof err, &path);

        if (r < 0 && r != -ENOENT)
                fprintf(stderr, "%s: note: %s\n", prog, err);
        free(path);
}

/* The local file of a weights argument and its repository's config.json
 * (hub/weights.h, as effnetd resolves its weights setting): itself, or for
 * hf://... the cached snapshot (pulled first when missing, with a bar on a
 * terminal). The caller clears *ret. */
static int weights_open(const char *arg, struct weights_file *ret)
{
        const char *base = strrchr(arg, '/');
        struct bar b = { .tty = isatty(STDERR_FILENO) == 1, .name = base ? base + 1 : arg };
        struct hub_opts o = { .progress = on_progress, .userdata = &b, .deadline_name = "--deadline" };
        char err[1024];
        int r = weights_resolve(arg, &o, err, sizeof err, ret);

        if (r < 0)
                fprintf(stderr, "%s: %s\n", prog, err);
        return r;
}

/* effnet_model_open on a weights argument (a file or hf://...); its
 * repository's config.json in *ret_config when asked for (the caller's;
 * NULL when there is none). */
static int model_open_arg(const char *arg, const struct effnet_open_opts *oo, struct effnet_model **ret,
                          char **ret_config)
{
        struct weights_file wf = { 0 };
        char err[512];
        int r = weights_open(arg, &wf);

        if (r < 0)
                goto done;
        if ((r = effnet_model_open(wf.path, oo, err, sizeof err, ret)) < 0)
                fprintf(stderr, "%s: %s\n", prog, err);
        if (r == 0 && ret_config) {
                *ret_config = wf.config;
                wf.config = NULL;
        }
done:
        weights_file_clear(&wf);
        return r;
}

static int open_model(const struct args *a, struct effnet_model **ret)
{
        if (!a->weights) {
                fprintf(stderr, "%s: --weights FILE is required\n", prog);
                return -EINVAL;
        }
        return model_open_arg(a->weights, &a->open, ret, NULL);
}

/* The SHA-256 of the weights' bytes as 64 hex digits: what a calibration
 * names, as effnetd computes it. */
static int weights_sha256(const struct effnet_model *m, char ret_hex[65])
{
        size_t len = 0;
        const void *data = effnet_model_file(m, &len);

        return data ? weights_sha256_hex(data, len, ret_hex) : -ENOMEM;
}

/* The calibration at path for m into *ret (NULL when path is NULL). */
static int calibration_open(struct effnet_model *m, const char *path, struct effnet_calibration **ret)
{
        char err[512], sha[65];
        int r;

        *ret = NULL;
        if (!path)
                return 0;
        if ((r = weights_sha256(m, sha)) < 0) {
                fprintf(stderr, "%s: cannot hash the weights\n", prog);
                return r;
        }
        if ((r = effnet_calibration_load(m, sha, path, err, sizeof err, ret)) < 0)
                fprintf(stderr, "%s: %s\n", prog, err);
        return r;
}

static int cmd_forward(const struct args *a)
{
        struct effnet_calibration *cal = NULL;
        struct effnet_model *m = NULL;
        struct effnet_exec *x = NULL;
        float *in = NULL, *out = NULL;
        int64_t shape[8];
        int nd, r;
        char err[512];

        if (!a->input || !a->output) {
                fprintf(stderr, "%s forward: --input and --output are required\n", prog);
                return 2;
        }
        if ((r = open_model(a, &m)) < 0 || (r = calibration_open(m, a->calibration, &cal)) < 0)
                goto out;
        if ((r = npy_read_f32(a->input, 8, err, sizeof err, &in, &nd, shape)) < 0) {
                fprintf(stderr, "%s: %s\n", prog, err);
                goto out;
        }
        if (nd != 4 || shape[0] < 1 || shape[0] > 4096 || shape[1] != 3 || shape[2] < 32 || shape[2] > 4096 ||
            shape[3] < 32 || shape[3] > 4096) {
                fprintf(stderr, "%s: %s: expected float32 [N, 3, H, W] with 32 <= H, W <= 4096\n", prog, a->input);
                r = -EINVAL;
                goto out;
        }
        const struct effnet_info *info = effnet_model_info(m);
        struct effnet_exec_opts eo = { .batch = (int)shape[0], .threads = a->threads, .precision = a->precision,
                                       .size = (int)shape[2], .width = (int)shape[3], .calibration = cal };
        if ((r = effnet_exec_new(m, &eo, err, sizeof err, &x)) < 0) {
                fprintf(stderr, "%s: %s\n", prog, err);
                goto out;
        }
        out = malloc(sizeof(float) * (size_t)shape[0] * (size_t)info->classes);
        if (!out) {
                r = -ENOMEM;
                goto out;
        }
        if ((r = effnet_exec_forward(x, in, (int)shape[0], out)) < 0) {
                fprintf(stderr, "%s: forward failed: %s\n", prog, strerror(-r));
                goto out;
        }
        int64_t oshape[2] = { shape[0], info->classes };
        if ((r = npy_write_f32(a->output, out, 2, oshape, err, sizeof err)) < 0)
                fprintf(stderr, "%s: %s\n", prog, err);
out:
        free(in);
        free(out);
        effnet_exec_free(x);
        effnet_calibration_free(cal);
        effnet_model_free(m);
        return r < 0 ? 1 : 0;
}

static int cmd_inspect(int argc, char **argv)
{
        struct effnet_model *m = NULL;
        char err[512];

        struct weights_file wf = { 0 };
        const char *cal_path = NULL;

        if (argc == 4 && strcmp(argv[2], "--calibration") == 0)
                cal_path = argv[3];
        else if (argc != 2) {
                fprintf(stderr, "Usage: %s inspect FILE|hf://ORG/NAME[@REVISION][/FILE] [--calibration CAL]\n",
                        prog);
                return 2;
        }
        int r = weights_open(argv[1], &wf);
        if (r < 0) {
                weights_file_clear(&wf);
                return 1;
        }
        char *path = wf.path;
        wf.path = NULL;
        weights_file_clear(&wf);
        r = effnet_model_open(path, NULL, err, sizeof err, &m);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", prog, err);
                free(path);
                return 1;
        }
        const struct effnet_info *i = effnet_model_info(m);
        const struct effnet_preproc *pp = &i->preproc;
        printf("file:          %s\n"
               "scheme:        %s\n"
               "variant:       %s\n"
               "classes:       %d\n"
               "dtype:         %s\n"
               "parameters:    %lld\n"
               "padding:       %s\n"
               "bn_eps:        %g\n"
               "input size:    %d\n"
               "resize:        %s, %s, crop_pct %.3f\n"
               "mean / std:    (%.3f, %.3f, %.3f) / (%.3f, %.3f, %.3f)\n",
               path, i->scheme == EFFNET_SCHEME_TIMM ? "timm" : "torchvision", i->variant, i->classes,
               i->dtype, (long long)i->params, padding_name(i->padding), (double)i->bn_eps, pp->size,
               pp->resize == EFFNET_RESIZE_BICUBIC ? "bicubic" : "bilinear",
               pp->crop == EFFNET_CROP_SQUASH ? "squash" : "center crop", (double)pp->crop_pct,
               (double)pp->mean[0], (double)pp->mean[1], (double)pp->mean[2], (double)pp->std[0],
               (double)pp->std[1], (double)pp->std[2]);
        if (hub_is_uri(argv[1]))
                printf("source:        %s\n", argv[1]);
        struct effnet_calibration *cal = NULL;
        if ((r = calibration_open(m, cal_path, &cal)) == 0 && cal) {
                const struct effnet_int8_check *k = effnet_calibration_check(cal);
                printf("int8 check:    %d held-out images: top-1 agreement %.3f, top-5 overlap %.3f, logit "
                       "difference max %.3f rms %.4f (x logit std); clipping %s\n", k->images, k->top1_agreement,
                       k->top5_overlap, k->max_logit_diff, k->rms_logit_diff, effnet_calibration_method(cal));
                struct effnet_calib_layer l;
                for (int i = 0; effnet_calibration_layer(cal, i, &l) == 0; i++) {
                        printf("  %-20s %s  scale %.6g", l.name, l.runs, (double)l.scale);
                        if (l.sensitivity >= 0)
                                printf("  sensitivity %.4f", (double)l.sensitivity);
                        printf("\n");
                }
        }
        effnet_calibration_free(cal);
        effnet_model_free(m);
        free(path);
        return r < 0 ? 1 : 0;
}

static int parse_scheme(const char *s, int *ret)
{
        if (!s || strcmp(s, "timm") == 0)
                *ret = EFFNET_SCHEME_TIMM;
        else if (strcmp(s, "torchvision") == 0)
                *ret = EFFNET_SCHEME_TORCHVISION;
        else
                return -EINVAL;
        return 0;
}

static int parse_dtype(const char *s, int *ret)
{
        if (strcmp(s, "f32") == 0 || strcmp(s, "F32") == 0)
                *ret = EFFNET_DTYPE_F32;
        else if (strcmp(s, "f16") == 0 || strcmp(s, "F16") == 0)
                *ret = EFFNET_DTYPE_F16;
        else if (strcmp(s, "bf16") == 0 || strcmp(s, "BF16") == 0)
                *ret = EFFNET_DTYPE_BF16;
        else
                return -EINVAL;
        return 0;
}

/* Spread of the logits of a few smooth images at the model's input size. */
static int logit_std(const char *path, char *err, size_t err_len, double *ret_std)
{
        struct effnet_model *m = NULL;
        struct effnet_exec *x = NULL;
        float *in = NULL, *out = NULL;
        const int n = 2;
        int r;

        if ((r = effnet_model_open(path, NULL, err, err_len, &m)) < 0)
                goto out;
        const struct effnet_info *info = effnet_model_info(m);
        int size = info->preproc.size;
        struct effnet_exec_opts eo = { .batch = n, .precision = EFFNET_FP32 };
        in = malloc(sizeof(float) * (size_t)n * 3 * size * size);
        out = malloc(sizeof(float) * (size_t)n * info->classes);
        if (!in || !out) {
                r = -ENOMEM;
                snprintf(err, err_len, "out of memory");
                goto out;
        }
        effnet_smooth_images(7, n, size, in);
        if ((r = effnet_exec_new(m, &eo, err, err_len, &x)) < 0)
                goto out;
        if ((r = effnet_exec_forward(x, in, n, out)) < 0) {
                snprintf(err, err_len, "forward pass: %s", strerror(-r));
                goto out;
        }
        double s = 0, s2 = 0, cnt = (double)n * info->classes;
        for (size_t i = 0; i < (size_t)n * info->classes; i++) {
                s += out[i];
                s2 += (double)out[i] * out[i];
        }
        *ret_std = sqrt(s2 / cnt - (s / cnt) * (s / cnt));
out:
        free(in);
        free(out);
        effnet_exec_free(x);
        effnet_model_free(m);
        return r;
}

static int cmd_init_weights(const struct args *a)
{
        char err[512];
        int scheme, dtype;
        double sd;

        if (!a->variant || !a->output || !a->have_seed) {
                fprintf(stderr, "%s init-weights: --variant, --seed and -o FILE are required\n", prog);
                return 2;
        }
        if (parse_scheme(a->scheme_name, &scheme) < 0 || parse_dtype(a->dtype_name, &dtype) < 0) {
                fprintf(stderr, "%s init-weights: bad --scheme or --dtype\n", prog);
                return 2;
        }
        /* BatchNorm is calibrated at a small size for speed; a second pass at
         * the real input size sets the classifier's scale there. */
        struct init_progress ip = { .sl.tty = isatty(STDERR_FILENO) == 1, .pass = 1, .passes = 2,
                                    .t0 = time_now_ns() };
        struct effnet_seeded_opts so = { .scheme = scheme, .classes = a->classes, .dtype = dtype, .gain = 1.0,
                                         .progress = on_init_progress, .userdata = &ip };
        int r = effnet_seeded_write(a->output, a->variant, a->seed, &so, err, sizeof err);
        if (r == 0) {
                status_show(&ip.sl, "init-weights: measuring the logits' spread at the input size, %.0f s",
                            (double)(time_now_ns() - ip.t0) / 1e9);
                r = logit_std(a->output, err, sizeof err, &sd);
        }
        if (r == 0 && sd > 0) {
                ip.pass = 2;
                so.gain = 4.0 / sd;
                r = effnet_seeded_write(a->output, a->variant, a->seed, &so, err, sizeof err);
        }
        status_clear(&ip.sl);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", prog, err);
                return 1;
        }
        return 0;
}

static int cmp_double(const void *x, const void *y)
{
        double a = *(const double *)x, b = *(const double *)y;
        return (a > b) - (a < b);
}

/* "isa":..,"layout":..,"kernels":{"impl":count,...} of an executor, as JSON
 * members. */
static void print_kernels(const struct effnet_exec *x)
{
        struct effnet_cpu cpu;
        struct effnet_kernel k[64];
        int n = effnet_exec_kernels(x, k, (int)ARRAY_SIZE(k));

        effnet_cpu_info(&cpu);
        printf("\"onednn\":\"%s\",\"isa\":\"%s\",\"layout\":\"%s\",\"kernels\":{", effnet_onednn_version(), cpu.isa,
               effnet_exec_layout(x));
        for (int i = 0; i < n; i++)
                printf("%s\"%s\":%d", i ? "," : "", k[i].impl, k[i].count);
        printf("}");
}

static int cmd_cpu(void)
{
        struct effnet_cpu cpu;
        int autop = EFFNET_FP32;

        effnet_cpu_info(&cpu);
        effnet_precision_resolve(EFFNET_PRECISION_AUTO, NULL, 0, &autop);
        printf("{\"isa\":\"%s\",\"bf16\":%s,\"fp32_layout\":\"%s\",\"bf16_layout\":%s%s%s,"
               "\"auto_precision\":\"%s\",\"onednn\":\"%s\",\"max_cpu_isa\":",
               cpu.isa, cpu.bf16 ? "true" : "false", cpu.fp32_layout, cpu.bf16_layout ? "\"" : "",
               cpu.bf16_layout ? cpu.bf16_layout : "null", cpu.bf16_layout ? "\"" : "", effnet_precision_name(autop),
               effnet_onednn_version());
        const char *cap = getenv("DNNL_MAX_CPU_ISA");
        /* The cap is the user's text: print it only if it is plain. */
        int plain = cap != NULL;
        for (const char *c = cap; c && *c && plain; c++)
                plain = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_';
        printf(plain ? "\"%s\"}\n" : "null}\n", plain ? cap : "");
        return 0;
}

/* One bench command: the model under test and what every batch size
 * reports with it. */
struct bench {
        const struct args *a;
        struct effnet_model *m;          /* owned */
        struct effnet_calibration *cal;  /* owned; NULL without --calibration */
        const struct effnet_info *info;  /* the model's */
        int size, threads;
        double load_ms;
        struct status_line sl;
};

/* --variant without --weights: seeded weights (torchvision names, 1000
 * classes) into the temporary file tmp, which the caller made and unlinks. */
static int bench_seeded_weights(struct bench *b, const char *tmp)
{
        char err[512];
        int r;

        status_show(&b->sl, "bench: generating seeded %s weights", b->a->variant);
        struct effnet_seeded_opts so = { .scheme = EFFNET_SCHEME_TORCHVISION, .classes = 1000,
                                         .dtype = EFFNET_DTYPE_F32, .gain = 1.0 };
        r = effnet_seeded_write(tmp, b->a->variant, 1, &so, err, sizeof err);
        if (r < 0)
                fprintf(stderr, "%s: %s\n", prog, err);
        return r;
}

/* Opens the weights into b->m, timing the load. */
static int bench_open(struct bench *b, const char *weights)
{
        int64_t t0 = time_now_ns();
        int r;

        status_show(&b->sl, "bench: loading the weights");
        if ((r = model_open_arg(weights, &b->a->open, &b->m, NULL)) < 0 ||
            (r = calibration_open(b->m, b->a->calibration, &b->cal)) < 0)
                return r;
        b->load_ms = (double)(time_now_ns() - t0) / 1e6;
        b->info = effnet_model_info(b->m);
        b->size = b->a->size ? b->a->size : b->info->preproc.size;
        b->threads = b->a->threads ? b->a->threads : cpu_usable_count();
        return 0;
}

/* The executor of one batch size, and how long it took to build. */
static int bench_exec_new(struct bench *b, int batch, struct effnet_exec **ret_exec, double *ret_build_ms)
{
        struct effnet_exec_opts eo = { .batch = batch, .threads = b->threads, .precision = b->a->precision,
                                       .size = b->size, .calibration = b->cal };
        int64_t t0 = time_now_ns();
        char err[512];
        int r;

        status_show(&b->sl, "bench: batch %d: building the executor", batch);
        if ((r = effnet_exec_new(b->m, &eo, err, sizeof err, ret_exec)) < 0) {
                status_clear(&b->sl);
                fprintf(stderr, "%s: %s\n", prog, err);
                return r;
        }
        *ret_build_ms = (double)(time_now_ns() - t0) / 1e6;
        return 0;
}

/* The warm-up runs, then the timed ones: ms[i] is run i's milliseconds. */
static int bench_runs(struct bench *b, struct effnet_exec *x, int batch, const float *in, float *logits, double *ms)
{
        const struct args *a = b->a;
        int r = 0;

        for (int i = 0; i < a->warmup && r == 0; i++) {
                status_show(&b->sl, "bench: batch %d: warm-up run %d of %d", batch, i + 1, a->warmup);
                r = effnet_exec_forward(x, in, batch, logits);
        }
        for (int i = 0; i < a->runs && r == 0; i++) {
                status_show(&b->sl, "bench: batch %d: run %d of %d", batch, i + 1, a->runs);
                int64_t t0 = time_now_ns();
                r = effnet_exec_forward(x, in, batch, logits);
                ms[i] = (double)(time_now_ns() - t0) / 1e6;
        }
        status_clear(&b->sl);
        return r;
}

/* One line for a batch size: the median of the runs (ms, sorted here). */
static void bench_report(const struct bench *b, const struct effnet_exec *x, int batch, double build_ms, double *ms)
{
        const struct args *a = b->a;

        qsort(ms, (size_t)a->runs, sizeof *ms, cmp_double);
        double med = a->runs % 2 ? ms[a->runs / 2] : (ms[a->runs / 2 - 1] + ms[a->runs / 2]) / 2;
        double rss = (double)proc_peak_rss() / (1024.0 * 1024.0);
        const char *prec = effnet_precision_name(effnet_exec_precision(x));
        if (a->json) {
                printf("{\"variant\":\"%s\",\"precision\":\"%s\",\"size\":%d,\"threads\":%d,"
                       "\"batch\":%d,\"images_per_s\":%.3f,\"ms_per_batch\":%.3f,"
                       "\"ms_min\":%.3f,\"ms_max\":%.3f,\"runs\":%d,\"load_ms\":%.1f,"
                       "\"build_ms\":%.1f,\"exec_mb\":%.1f,\"peak_rss_mb\":%.1f,",
                       b->info->variant, prec, b->size, b->threads, batch, batch * 1000.0 / med, med, ms[0],
                       ms[a->runs - 1], a->runs, b->load_ms, build_ms,
                       (double)effnet_exec_bytes(x) / (1024.0 * 1024.0), rss);
                print_kernels(x);
                printf("}\n");
        } else {
                printf("%s %s %dpx threads %d batch %d: %.2f img/s, %.2f ms/batch (median of %d; "
                       "min %.2f max %.2f), load %.0f ms, build %.0f ms, peak RSS %.0f MB\n",
                       b->info->variant, prec, b->size, b->threads, batch, batch * 1000.0 / med, med, a->runs,
                       ms[0], ms[a->runs - 1], b->load_ms, build_ms, rss);
        }
        fflush(stdout);
}

/* Builds, runs and reports one batch size. */
static int bench_batch(struct bench *b, int batch)
{
        struct effnet_exec *x = NULL;
        size_t in_n = (size_t)batch * 3 * (size_t)b->size * (size_t)b->size;
        float *in = NULL, *logits = NULL;
        double *ms = NULL, build_ms;
        int r;

        if ((r = bench_exec_new(b, batch, &x, &build_ms)) < 0)
                return r;
        in = malloc(sizeof(float) * in_n);
        logits = malloc(sizeof(float) * (size_t)batch * (size_t)b->info->classes);
        ms = malloc(sizeof(double) * (size_t)b->a->runs);
        if (!in || !logits || !ms) {
                r = -ENOMEM;
                goto out;
        }
        /* A smooth deterministic pattern: values do not change the timing. */
        for (size_t i = 0; i < in_n; i++)
                in[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
        if ((r = bench_runs(b, x, batch, in, logits, ms)) == 0)
                bench_report(b, x, batch, build_ms, ms);
        else
                fprintf(stderr, "%s: forward failed: %s\n", prog, strerror(-r));
out:
        free(in);
        free(logits);
        free(ms);
        effnet_exec_free(x);
        return r;
}

/* Each size of the --batch list in turn; the first failure stops. */
static int bench_batches(struct bench *b)
{
        char list[256];

        snprintf(list, sizeof list, "%s", b->a->batches);
        for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                int batch, r;
                if (int_arg(tok, 1, 4096, &batch) < 0) {
                        fprintf(stderr, "%s: bad batch size '%s'\n", prog, tok);
                        return -EINVAL;
                }
                if ((r = bench_batch(b, batch)) < 0)
                        return r;
        }
        return 0;
}

static int cmd_bench(const struct args *a)
{
        struct bench b = { .a = a, .sl.tty = isatty(STDERR_FILENO) == 1 };
        char tmp[] = "/tmp/effnet-bench-XXXXXX.safetensors";
        const char *weights = a->weights;
        int r = 0, tmp_made = 0;

        if (!weights && !a->variant) {
                fprintf(stderr, "%s bench: --weights FILE or --variant V is required\n", prog);
                return 2;
        }
        if (!weights) {
                int fd = mkstemps(tmp, 12);
                if (fd < 0) {
                        perror("mkstemps");
                        return 1;
                }
                close(fd);
                tmp_made = 1;
                if ((r = bench_seeded_weights(&b, tmp)) < 0)
                        goto out;
                weights = tmp;
        }
        if ((r = bench_open(&b, weights)) == 0)
                r = bench_batches(&b);
out:
        status_clear(&b.sl);
        effnet_calibration_free(b.cal);
        effnet_model_free(b.m);
        if (tmp_made)
                unlink(tmp);
        return r < 0 ? 1 : 0;
}

/* Reads a whole file of at most max bytes. */
static int read_file(const char *path, size_t max, uint8_t **ret_data, size_t *ret_len)
{
        FILE *f = fopen(path, "rbe");
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0;
        int r = 0;

        if (!f)
                return -errno;
        for (;;) {
                if (len == cap) {
                        cap = cap ? cap * 2 : 1 << 16;
                        uint8_t *b = realloc(buf, cap);
                        if (!b) {
                                r = -ENOMEM;
                                break;
                        }
                        buf = b;
                }
                size_t n = fread(buf + len, 1, cap - len, f);
                len += n;
                if (len > max) {
                        r = -E2BIG;
                        break;
                }
                if (n == 0) {
                        if (ferror(f))
                                r = -EIO;
                        break;
                }
        }
        fclose(f);
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret_data = buf;
        *ret_len = len;
        return 0;
}

/* The flags of the classify command; images are argv[first..]. */
struct classify_args {
        const char *weights, *labels_path, *top_k_arg, *calibration;
        int precision, threads, first;
};

/* 0 to go on, 1 when --help was printed, -EINVAL for a usage error (said). */
static int classify_parse(int argc, char **argv, struct classify_args *ret)
{
        static const struct option opts[] = {
                { "weights", required_argument, 0, 'w' },   { "top-k", required_argument, 0, 'k' },
                { "labels", required_argument, 0, 'l' },    { "precision", required_argument, 0, 'p' },
                { "threads", required_argument, 0, 't' },   { "help", no_argument, 0, 'h' },
                { "calibration", required_argument, 0, 'c' },
                { 0, 0, 0, 0 },
        };
        struct classify_args ca = { .precision = EFFNET_FP32 };
        int c, r = 0;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'w': ca.weights = optarg; break;
                case 'k': ca.top_k_arg = optarg; break;
                case 'l': ca.labels_path = optarg; break;
                case 'p': r = effnet_precision_parse(optarg, &ca.precision); break;
                case 't': r = int_arg(optarg, 0, 1024, &ca.threads); break;
                case 'c': ca.calibration = optarg; break;
                case 'h':
                        printf("Usage: %s classify --weights FILE [--top-k K] [--labels FILE] "
                               "[--precision fp32|bf16|auto|int8] [--calibration CAL] [--threads T] IMG...\n",
                               prog);
                        return 1;
                default: return -EINVAL;
                }
                if (r < 0) {
                        fprintf(stderr, "%s classify: invalid value '%s'\n", prog, optarg);
                        return -EINVAL;
                }
        }
        if (!ca.weights || optind >= argc) {
                fprintf(stderr, "Usage: %s classify --weights FILE [--top-k K] IMG...\n", prog);
                return -EINVAL;
        }
        ca.first = optind;
        *ret = ca;
        return 0;
}

/* The model, its labels and one executor of batch 1, with the buffers of
 * one image. */
struct classify {
        struct effnet_model *m;          /* owned, as is everything below */
        const struct effnet_info *info;  /* the model's */
        struct effnet_calibration *cal;
        struct effnet_exec *x;
        struct api_labels *labels;
        float *in;                       /* [3][size][size] */
        float *logits;                   /* [classes] */
        int top_k;
};

static void classify_close(struct classify *c)
{
        free(c->in);
        free(c->logits);
        api_labels_free(c->labels);
        effnet_exec_free(c->x);
        effnet_calibration_free(c->cal);
        effnet_model_free(c->m);
}

/* Fills c (zeroed by the caller, closed by it on failure too). */
static int classify_open(const struct classify_args *ca, struct classify *c)
{
        char err[512], note[512], *config = NULL;
        int r;

        if ((r = model_open_arg(ca->weights, NULL, &c->m, &config)) < 0)
                return r;
        c->info = effnet_model_info(c->m);
        if (api_parse_top_k(ca->top_k_arg, c->info->classes, &c->top_k) < 0) {
                fprintf(stderr, "%s classify: --top-k must be an integer in 1..%d\n", prog, c->info->classes);
                return -EINVAL;
        }
        /* The names effnetd answers with for the same weights. */
        r = api_labels_open(ca->labels_path, config, c->info->classes, err, sizeof err, note, sizeof note, &c->labels);
        free(config);
        if (*note)
                fprintf(stderr, "%s: note: labels %s\n", prog, note);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", prog, err);
                return r;
        }
        if ((r = calibration_open(c->m, ca->calibration, &c->cal)) < 0)
                return r;
        struct effnet_exec_opts eo = { .batch = 1, .threads = ca->threads, .precision = ca->precision,
                                       .calibration = c->cal };
        if ((r = effnet_exec_new(c->m, &eo, err, sizeof err, &c->x)) < 0) {
                fprintf(stderr, "%s: %s\n", prog, err);
                return r;
        }
        int size = c->info->preproc.size;
        c->in = malloc(sizeof(float) * 3 * (size_t)size * (size_t)size);
        c->logits = malloc(sizeof(float) * (size_t)c->info->classes);
        return c->in && c->logits ? 0 : -ENOMEM;
}

/* c->logits of an image's bytes; the reason in err on failure. */
static int classify_forward(struct classify *c, const uint8_t *data, size_t len, char *err, size_t err_len)
{
        int r;

        if (len == 0)
                return err_set(err, err_len, -EBADMSG, "empty file");
        if ((r = effnet_image_prepare(data, len, NULL, &c->info->preproc, err, err_len, c->in)) < 0)
                return r;
        if ((r = effnet_exec_forward(c->x, c->in, 1, c->logits)) < 0)
                snprintf(err, err_len, "forward failed: %s", strerror(-r));
        return r;
}

/* The server's error for what failed on an image. */
static enum api_error classify_error(int r)
{
        return r == -E2BIG                       ? API_E_TOO_LARGE
               : r == -ENOTSUP || r == -EBADMSG ? API_E_INVALID_IMAGE
               : r == -EDOM                      ? API_E_NON_FINITE
                                                 : API_E_INTERNAL;
}

/* One image file: a line on stdout with what effnetd answers for the same
 * bytes, and the reason on stderr when that is an error (*failed set then;
 * a file that cannot be read gets no line). Returns a negative code only
 * for a failure that stops the command. */
static int classify_file(struct classify *c, const char *path, bool *failed)
{
        const size_t max_bytes = EFFNET_IMAGE_MAX_BYTES;
        char err[512], *body = NULL;
        uint8_t *data = NULL;
        size_t len = 0;
        int r = 0, fr = read_file(path, max_bytes, &data, &len);

        if (fr < 0 && fr != -E2BIG) {
                fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(-fr));
                *failed = true;
                return 0;
        }
        if (fr == -E2BIG)
                snprintf(err, sizeof err, "file larger than %zu bytes", max_bytes);
        else
                fr = classify_forward(c, data, len, err, sizeof err);
        free(data);
        if (fr == 0 && (r = api_classify_body(c->info->variant, c->labels, c->logits, 1, c->info->classes, c->top_k,
                                              false, &body)) == -EDOM) {
                fr = r;
                snprintf(err, sizeof err, "the model computed NaN or Inf for this input: its weights are broken");
        }
        if (fr != 0) {
                r = api_error_body(classify_error(fr), err, &body);
                fprintf(stderr, "%s: %s: %s\n", prog, path, err);
                *failed = true;
        }
        if (r < 0)
                return r;
        printf("%s\n", body);
        free(body);
        return 0;
}

static int cmd_classify(int argc, char **argv)
{
        struct classify_args ca;
        struct classify c = { 0 };
        bool failed = false;
        int r = classify_parse(argc, argv, &ca);

        if (r != 0)
                return r > 0 ? 0 : 2;
        if ((r = classify_open(&ca, &c)) == 0) {
                for (int i = ca.first; i < argc && r == 0; i++)
                        r = classify_file(&c, argv[i], &failed);
                fflush(stdout);
        }
        classify_close(&c);
        return r < 0 ? 1 : failed;
}

static int cmd_pull(int argc, char **argv)
{
        static const struct option opts[] = {
                { "revision", required_argument, 0, 'r' }, { "file", required_argument, 0, 'f' },
                { "refresh", no_argument, 0, 'R' },        { "deadline", required_argument, 0, 'd' },
                { "help", no_argument, 0, 'h' },           { 0, 0, 0, 0 },
        };
        const char *revision = NULL, *file = NULL;
        bool refresh = false;
        int64_t deadline_us = (int64_t)HUB_DEADLINE_DEFAULT_S * PARSE_S;
        struct hub_ref ref;
        struct hub_file *f = NULL;
        char err[512];
        int c, r;

        optind = 1;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'r': revision = optarg; break;
                case 'f': file = optarg; break;
                case 'R': refresh = true; break;
                case 'd':
                        if (parse_duration("--deadline", optarg, PARSE_S, PARSE_S, PARSE_S, (int64_t)604800 * PARSE_S,
                                           err, sizeof err, &deadline_us) < 0) {
                                fprintf(stderr, "%s pull: %s\n", prog, err);
                                return 2;
                        }
                        break;
                case 'h':
                        printf("Usage: %s pull REPO_ID [--revision R] [--file F] [--refresh] [--deadline S]\n"
                               "       %s pull hf://ORG/NAME[@REVISION][/FILE] [--refresh] [--deadline S]\n"
                               "Prints the cached file's path. --refresh asks the hub even when the\n"
                               "revision is cached (a branch may have moved on). --deadline: the time\n"
                               "one file's download may take in all (default %d s).\n", prog, prog,
                               HUB_DEADLINE_DEFAULT_S);
                        return 0;
                default: return 2;
                }
        }
        if (optind != argc - 1) {
                fprintf(stderr, "Usage: %s pull REPO_ID [--revision R] [--file F]\n", prog);
                return 2;
        }
        const char *id = argv[optind];
        if (hub_is_uri(id) && (revision || file)) {
                fprintf(stderr, "%s pull: an hf:// name carries its own revision and file\n", prog);
                return 2;
        }
        r = hub_is_uri(id) ? hub_parse_uri(id, err, sizeof err, &ref)
                           : hub_ref_init(id, revision, file, err, sizeof err, &ref);
        if (r < 0) {
                fprintf(stderr, "%s pull: %s\n", prog, err);
                return 2;
        }
        if (pull(&ref, refresh, deadline_us / PARSE_S, &f) < 0)
                return 1;
        printf("%s\n", f->path);
        pull_config(&ref, f, deadline_us / PARSE_S);
        hub_file_free(f);
        return 0;
}

static int cmp_str(const void *x, const void *y)
{
        return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The image files of a calibration: each argument a file, or a directory
 * whose regular files are taken in name order. Appends to *list. */
static int calibrate_list(const char *arg, char ***list, int *n)
{
        DIR *d = opendir(arg);
        int start = *n;

        if (!d) {
                if (errno != ENOTDIR)
                        return -errno;
                char **l = realloc(*list, sizeof **list * (size_t)(*n + 1));
                if (!l || !(l[*n] = strdup(arg)))
                        return -ENOMEM;
                *list = l;
                (*n)++;
                return 0;
        }
        for (struct dirent *e; (e = readdir(d));) {
                if (e->d_name[0] == '.')
                        continue;
                char **l = realloc(*list, sizeof **list * (size_t)(*n + 1));
                if (!l) {
                        closedir(d);
                        return -ENOMEM;
                }
                *list = l;
                if (asprintf(&l[*n], "%s/%s", arg, e->d_name) < 0) {
                        closedir(d);
                        return -ENOMEM;
                }
                (*n)++;
        }
        closedir(d);
        qsort(*list + start, (size_t)(*n - start), sizeof **list, cmp_str);
        return 0;
}

static void on_calib_progress(void *userdata, const char *phase, int done, int total)
{
        struct status_line *sl = userdata;
        status_show(sl, "calibrate: %s %d of %d", phase, done, total);
}

static int cmd_calibrate(int argc, char **argv)
{
        static const struct option opts[] = {
                { "weights", required_argument, 0, 'w' },  { "images", required_argument, 0, 'i' },
                { "count", required_argument, 0, 'n' },    { "held-out", required_argument, 0, 'H' },
                { "method", required_argument, 0, 'm' },   { "threshold", required_argument, 0, 'T' },
                { "threads", required_argument, 0, 't' },  { "output", required_argument, 0, 'o' },
                { "size", required_argument, 0, 's' },     { "help", no_argument, 0, 'h' },
                { 0, 0, 0, 0 },
        };
        struct status_line sl = { .tty = isatty(STDERR_FILENO) == 1 };
        struct effnet_calib_opts co = { .progress = on_calib_progress, .userdata = &sl };
        const char *weights = NULL, *out = NULL;
        struct effnet_model *m = NULL;
        struct effnet_calibration *cal = NULL;
        char **files = NULL, err[512], sha[65];
        float *images = NULL;
        int n_files = 0, count = 0, used = 0, c, r = 0;

        optind = 1;
        while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
                switch (c) {
                case 'w': weights = optarg; break;
                case 'o': out = optarg; break;
                case 'i': r = calibrate_list(optarg, &files, &n_files); break;
                case 'n': r = int_arg(optarg, 2, 100000, &count); break;
                case 'H': r = int_arg(optarg, 1, 100000, &co.held_out); break;
                case 't': r = int_arg(optarg, 0, 1024, &co.threads); break;
                case 's': r = int_arg(optarg, 32, 4096, &co.size); break;
                case 'T': r = parse_double("", optarg, -1, 1e6, NULL, 0, &co.threshold); break;
                case 'm':
                        r = -EINVAL;
                        for (int i = 0; effnet_clip_name(i); i++)
                                if (strcmp(optarg, effnet_clip_name(i)) == 0)
                                        co.method = i, r = 0;
                        break;
                case 'h':
                        printf("Usage: %s calibrate --weights FILE --images DIR|IMG... [--count N] [--held-out N]\n"
                               "          [--method auto|mse|percentile|max|kl] [--threshold X] [--size S]\n"
                               "          [--threads T] -o CAL\n",
                               prog);
                        goto out;
                default: r = -EINVAL; goto out;
                }
                if (r < 0) {
                        fprintf(stderr, "%s calibrate: invalid value '%s': %s\n", prog, optarg, strerror(-r));
                        goto out;
                }
        }
        /* Arguments after --images DIR|IMG are more images. */
        for (int i = optind; i < argc && r == 0; i++)
                r = calibrate_list(argv[i], &files, &n_files);
        if (r < 0 || !weights || !out || n_files < 2) {
                fprintf(stderr, "Usage: %s calibrate --weights FILE --images DIR|IMG... -o CAL (at least 2 images)\n",
                        prog);
                r = -EINVAL;
                goto out;
        }
        if ((r = model_open_arg(weights, NULL, &m, NULL)) < 0 || (r = weights_sha256(m, sha)) < 0)
                goto out;
        const struct effnet_info *info = effnet_model_info(m);
        /* The server's preprocessing; --size changes only the edge. */
        struct effnet_preproc pp = info->preproc;
        if (co.size)
                pp.size = co.size;
        size_t per = (size_t)3 * (size_t)pp.size * (size_t)pp.size;
        int want = count ? count : n_files;
        if (!(images = malloc(sizeof(float) * per * (size_t)(want < n_files ? want : n_files)))) {
                r = -ENOMEM;
                goto out;
        }
        /* The server's own preprocessing, image by image; files that are
         * not images are skipped and said. */
        for (int i = 0; i < n_files && used < want; i++) {
                uint8_t *data = NULL;
                size_t len = 0;
                status_show(&sl, "calibrate: reading %d of %d", i + 1, n_files);
                if ((r = read_file(files[i], EFFNET_IMAGE_MAX_BYTES, &data, &len)) == 0)
                        r = effnet_image_prepare(data, len, NULL, &pp, err, sizeof err,
                                                 images + per * (size_t)used);
                else
                        snprintf(err, sizeof err, "%s", strerror(-r));
                free(data);
                if (r < 0) {
                        status_clear(&sl);
                        fprintf(stderr, "%s calibrate: skipping %s: %s\n", prog, files[i], err);
                        continue;
                }
                used++;
        }
        if (used < 2) {
                status_clear(&sl);
                fprintf(stderr, "%s calibrate: %d usable images, at least 2 needed\n", prog, used);
                r = -EINVAL;
                goto out;
        }
        if ((r = effnet_calibrate(m, sha, images, used, &co, err, sizeof err, &cal)) < 0 ||
            (r = effnet_calibration_save(cal, out, err, sizeof err)) < 0) {
                status_clear(&sl);
                fprintf(stderr, "%s calibrate: %s\n", prog, err);
                goto out;
        }
        status_clear(&sl);
        const struct effnet_int8_check *k = effnet_calibration_check(cal);
        struct effnet_calib_layer l;
        int n_int8 = 0, n_layers = 0;
        for (; effnet_calibration_layer(cal, n_layers, &l) == 0; n_layers++)
                n_int8 += strcmp(l.runs, "int8") == 0;
        printf("%s: %d images for the scales (clipping: %s), %d of %d convolutions in int8\n"
               "int8 against fp32 on %d held-out images: top-1 agreement %.3f, top-5 overlap %.3f, "
               "logit difference max %.3f, rms %.4f (in logit std)\n",
               out, used - k->images, effnet_calibration_method(cal), n_int8, n_layers, k->images,
               k->top1_agreement, k->top5_overlap, k->max_logit_diff, k->rms_logit_diff);
out:
        for (int i = 0; i < n_files; i++)
                free(files[i]);
        free(files);
        free(images);
        effnet_calibration_free(cal);
        effnet_model_free(m);
        return r < 0 ? 1 : 0;
}

/* hash-key: the line of effnetd's api-keys-file for a key read from
 * standard input, so that the key itself is neither an argument (seen in
 * ps and shell history) nor stored. */
static int cmd_hash_key(void)
{
        char key[AUTH_MAX_KEY_LEN + 2], hex[2 * AUTH_DIGEST_LEN + 1];
        size_t n = fread(key, 1, sizeof key, stdin);

        if (n > AUTH_MAX_KEY_LEN + 1 || (n == AUTH_MAX_KEY_LEN + 1 && key[n - 1] != '\n')) {
                fprintf(stderr, "%s hash-key: a key is at most %d characters\n", prog, AUTH_MAX_KEY_LEN);
                return 1;
        }
        while (n > 0 && (key[n - 1] == '\n' || key[n - 1] == '\r'))
                n--;
        for (size_t i = 0; i < n; i++)
                if (key[i] <= ' ' || key[i] >= 0x7f) {
                        fprintf(stderr, "%s hash-key: a key is one line of printable ASCII without blanks (as "
                                "\"Authorization: Bearer KEY\" carries it)\n", prog);
                        return 1;
                }
        if (n == 0) {
                fprintf(stderr, "%s hash-key: no key on standard input\n", prog);
                return 1;
        }
        int r = auth_hash_key(key, n, hex);
        explicit_bzero(key, sizeof key);
        if (r < 0) {
                fprintf(stderr, "%s hash-key: %s\n", prog, strerror(-r));
                return 1;
        }
        printf("%s\n", hex);
        return 0;
}

int main(int argc, char **argv)
{
        struct args a;

        if (argc < 2)
                return usage(stderr);
        const char *cmd = argv[1];
        if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0)
                return usage(stdout);
        if (strcmp(cmd, "--version") == 0) {
                printf("effnet %s\n", EFFNET_VERSION);
                return 0;
        }
        if (strcmp(cmd, "inspect") == 0)
                return cmd_inspect(argc - 1, argv + 1);
        if (strcmp(cmd, "classify") == 0)
                return cmd_classify(argc - 1, argv + 1);
        if (strcmp(cmd, "pull") == 0)
                return cmd_pull(argc - 1, argv + 1);
        if (strcmp(cmd, "calibrate") == 0)
                return cmd_calibrate(argc - 1, argv + 1);
        if (strcmp(cmd, "cpu") == 0)
                return cmd_cpu();
        if (strcmp(cmd, "hash-key") == 0)
                return argc == 2 ? cmd_hash_key() : usage(stderr);
        int r = parse_args(argc - 1, argv + 1, &a);
        if (r)
                return r > 0 ? 0 : 2;
        if (optind < argc - 1) {
                fprintf(stderr, "%s %s: unexpected argument '%s'\n", prog, cmd, argv[optind + 1]);
                return 2;
        }
        if (strcmp(cmd, "forward") == 0)
                return cmd_forward(&a);
        if (strcmp(cmd, "bench") == 0)
                return cmd_bench(&a);
        if (strcmp(cmd, "init-weights") == 0)
                return cmd_init_weights(&a);
        fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
        return usage(stderr);
}

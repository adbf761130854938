/* repository: a model repository on disk, as Triton and TF Serving lay it
 * out: DIR/NAME/VERSION/model.safetensors (versions are positive
 * integers), an optional DIR/NAME/config.conf in effnetd's INI syntax with
 * the model's own settings, and an optional DIR/NAME/labels.txt. A scan
 * says which models are there, which of their versions the version policy
 * wants, and what identifies each (file and settings), so that a rescan
 * loads only what changed. It loads nothing itself.
 *
 *   struct repo_scan *sc;
 *   r = repo_scan("/srv/models", NULL, NULL, err, sizeof err, &sc);     // every model
 *   for (int i = 0; i < sc->n; i++) ... sc->models[i].versions[k].path ...
 *   sc = repo_scan_free(sc);
 *
 * config.conf is read by the daemon's INI reader (config.h: "key = value",
 * '#' and ';' comments, "quoted" values; [sections] accepted and ignored).
 * Its keys, all optional:
 *   version-policy = latest N | all | specific V[,V...]   (default latest 1)
 *   labels = FILE (relative to the model's folder), precision (fp32, bf16,
 *   auto, int8), calibration = FILE (relative to each version's folder:
 *   a calibration belongs to one version's weights; default
 *   VERSION/calibration.json when there is one), padding, bn-eps,
 *   input-size, max-batch, workers, threads
 */
#ifndef EFFNET_DAEMON_REPOSITORY_H
#define EFFNET_DAEMON_REPOSITORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPO_MAX_MODELS 128
#define REPO_MAX_VERSIONS 16        /* versions served at once per model */
#define REPO_MAX_NAME 64

enum repo_policy { REPO_LATEST, REPO_ALL, REPO_SPECIFIC };

/* A model's own settings; -1 (or 0 for sizes) where config.conf is silent:
 * the daemon's apply. */
struct repo_model_conf {
        enum repo_policy policy;
        int latest;                          /* REPO_LATEST: how many */
        int64_t specific[REPO_MAX_VERSIONS]; /* REPO_SPECIFIC */
        int n_specific;
        char labels[1024];                   /* "" or a path */
        char calibration[1024];              /* "" or as written: absolute, or relative to a version's folder */
        int precision;                       /* enum effnet_precision, or -1 */
        int padding;                         /* enum effnet_padding, or -1 */
        double bn_eps;                       /* -1: the daemon's */
        int input_size, max_batch, workers, threads;   /* 0: the daemon's */
};

struct repo_version {
        int64_t version;
        char path[1024];                     /* DIR/NAME/VERSION/model.safetensors */
        char calibration[1100];              /* its int8 calibration file, or "" */
        char ident[330];                     /* the files' identity (device, inode, size, mtime) */
};

struct repo_model {
        char name[REPO_MAX_NAME + 1];
        struct repo_model_conf conf;
        char conf_ident[200];                /* config.conf's, labels.txt's and an override's identity */
        struct repo_version versions[REPO_MAX_VERSIONS];   /* wanted by the policy, highest first */
        int n_versions;
        char error[512];                     /* non-empty: not loadable (bad config.conf, no version) */
};

struct repo_scan {
        int n;
        struct repo_model models[];          /* [n], in name order */
};

/* Settings of one model given with a load call (Triton's load with
 * {"parameters": {"config": "<JSON>"}}), over its config.conf's: a list of
 * such, one per model, each owned by its holder. */
#define REPO_OVERRIDE_MAX_KEYS 32
#define REPO_OVERRIDE_MAX_VALUE 1023         /* bytes of one value (a path at most) */
struct repo_override {
        char name[REPO_MAX_NAME + 1];        /* the model's */
        uint64_t id;                         /* unique to this override: part of the settings' identity */
        int n;
        const char *keys[REPO_OVERRIDE_MAX_KEYS], *values[REPO_OVERRIDE_MAX_KEYS];   /* into text */
        struct repo_override *next;
        size_t used, cap;
        char text[];                         /* [cap]: the keys and values, as large as the config given */
};

/* Reads the body of a load call for model name (len bytes, not
 * NUL-terminated; may be empty): no "parameters" or no "config" in them
 * gives *ret_override NULL (the model's config.conf alone); a "config"
 * (a string holding a JSON object of config.conf's keys, with string,
 * number or boolean values) is checked as config.conf's lines are, and
 * any error refuses the whole call. Returns 0, or -EINVAL (bad JSON, a
 * parameter other than config, an unknown key, a bad value), -E2BIG,
 * -ENOMEM, with the reason in err. *ret_override is the caller's
 * (repo_override_free). */
int repo_override_parse(const char *name, const char *body, size_t len, char *err, size_t err_len,
                        struct repo_override **ret_override);

/* Frees one override (not the ones after it); NULL is accepted. */
struct repo_override *repo_override_free(struct repo_override *o);

/* Scans dir (only: that model alone, or NULL for all), the overrides
 * (a list, may be NULL) applied over the config.conf of the models they
 * name. A model with a bad config.conf or no version is listed with its
 * error. -ENOENT (dir missing; with only: that model missing), -ENOTDIR,
 * -E2BIG (more than REPO_MAX_MODELS models), -ENOMEM; message in err. */
int repo_scan(const char *dir, const char *only, const struct repo_override *overrides, char *err, size_t err_len,
              struct repo_scan **ret_scan);

struct repo_scan *repo_scan_free(struct repo_scan *sc);

/* The model named name, or NULL. */
const struct repo_model *repo_scan_find(const struct repo_scan *sc, const char *name);

/* Whether name is a model name the repository can hold (letters, digits,
 * '-', '_', '.', not starting with '.', at most REPO_MAX_NAME bytes). */
bool repo_name_ok(const char *name, size_t len);

#endif

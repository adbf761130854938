/* config: every effnetd setting in one table (name, section, type, default,
 * bounds, help). Sources in rising precedence: defaults, the config file
 * (SYSCONFDIR/effnetd/effnetd.conf or --config FILE; "key = value" lines under
 * [sections]), EFFNETD_<NAME> environment variables, command-line flags
 * --name VALUE. --help, --print-config and --check-config come from the same
 * table. */
#ifndef EFFNET_DAEMON_CONFIG_H
#define EFFNET_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "effnet.h"

/* The build sets EFFNETD_SYSCONFDIR to meson's sysconfdir, where meson
 * install puts effnetd.conf (/etc with --prefix=/usr). */
#ifndef EFFNETD_SYSCONFDIR
#define EFFNETD_SYSCONFDIR "/etc"
#endif
#define CONF_DEFAULT_FILE EFFNETD_SYSCONFDIR "/effnetd/effnetd.conf"
#define CONF_MAX_SETTINGS 64
#define CONF_MAX_FILE_BYTES (1 << 20)   /* a config file larger than this is refused */

enum conf_log_format { CONF_LOG_TEXT, CONF_LOG_JSON };
enum conf_control_mode { CONF_CONTROL_NONE, CONF_CONTROL_POLL, CONF_CONTROL_EXPLICIT };

struct conf {
        char *weights;              /* owned strings; NULL when unset */
        char *listen;
        char *admin_listen;
        char *grpc_listen;
        char *otlp_endpoint;        /* [log] spans to an OpenTelemetry collector; NULL: off */
        char *allowed_hosts;
        char *api_keys_file;        /* [security] */
        char *tls_cert;
        char *tls_key;
        char *tls_client_ca;
        char *labels;
        char *model_repository;     /* a directory of models, instead of weights */
        enum conf_control_mode model_control_mode;
        char *load_model;           /* explicit mode: names loaded at start, comma-separated; "*": all */
        int64_t repository_poll_us;
        char *default_model;
        char *calibration;          /* int8 calibration file (effnet calibrate) */
        int64_t hub_download_deadline_us;  /* one hf:// file's fetch, in all */
        enum effnet_precision precision;
        enum effnet_padding padding;
        double bn_eps;              /* 0 = from the weights' source */
        int64_t max_batch;
        int64_t max_delay_us;       /* durations: in microseconds whatever unit they were written in */
        int64_t queue;
        int64_t workers;
        int64_t threads;
        int64_t http_threads;
        int64_t max_body_bytes;
        int64_t v2_max_body_bytes;
        int64_t memory_budget;      /* what requests may hold in all (server/budget.h) */
        int64_t max_client_share;   /* of it, per client address; filled in when 0 (the default) */
        int64_t max_body_total;     /* the former name of memory_budget: 0 unless set */
        int64_t max_answer_total;
        int64_t max_images;
        int64_t max_pixels;
        int64_t max_request_pixels;
        int64_t max_connections;
        int64_t grpc_max_streams;
        int64_t max_connections_per_client;
        int64_t connection_timeout_us;
        int64_t body_timeout_us;
        int64_t header_timeout_us;
        int64_t decode_threads;
        int64_t decode_queue;
        int64_t deadline_us;
        int64_t retry_after_us;
        int64_t drain_timeout_us;
        bool jpeg_fast;
        bool ui;                    /* the try-it page at GET / */
        bool show_paths;            /* absolute file paths in the answers about the model */
        bool access_log;
        int64_t otlp_queue;
        enum conf_log_format log_format;
        int64_t watchdog_stall_us;  /* a busy worker may go this long without finishing a batch */

        char *file;                 /* owned: the config file read, or NULL */
        char *origin[CONF_MAX_SETTINGS]; /* owned: where each setting's value came from */
};

/* Fills c from defaults, the config file, the environment and argv (argv[0]
 * is skipped; --config FILE or EFFNETD_CONFIG names the file, and the
 * default file is read only if it exists). Returns 0, or -EINVAL with one
 * message per line in err ("FILE:LINE: ..." for the file) naming each bad
 * setting; parsing goes on after an error so that all are reported. c is
 * owned by the caller (conf_free) on success only. */
int conf_load(int argc, char **argv, struct conf *c, char *err, size_t err_len);
void conf_free(struct conf *c);

/* Prints one entry per setting: flag, environment variable, section and key,
 * default, bounds, help. */
void conf_usage(FILE *f);

/* Prints the settings in effect as a config file, each with where its value
 * came from (default, FILE:LINE, EFFNETD_X, --x) as a comment. */
void conf_print(FILE *f, const struct conf *c);

/* The settings in effect on one line of name=value pairs (for the log). */
void conf_print_line(FILE *f, const struct conf *c);

/* One line of an INI file as conf_ini_read hands it over: a "[name]"
 * header (key NULL, section the name) or a "key = value" pair (key and
 * value trimmed, the value without the double quotes around it, section
 * the one it is under, "" before any header). */
struct conf_ini_line {
        const char *path;
        int lineno;
        const char *section;
        char *key, *value;
};

/* What a file's lines go to: line takes each header and pair and returns
 * 0, or a negative errno with the reason in why (reported as
 * "PATH:LINE: why"); error gets every message (the ones line gave and
 * the reader's own: malformed lines, over-long lines, a file over its
 * size) and returns 0 to read on, or a negative errno to stop there. */
struct conf_ini_ops {
        int (*line)(void *userdata, const struct conf_ini_line *l, char *why, size_t why_len);
        int (*error)(void *userdata, const char *message);
        void *userdata;
};

#define CONF_INI_LINE_MAX 4094           /* bytes of a line, without its newline */

/* Reads the INI file at path: "key = value" lines under optional
 * "[section]" headers, '#' and ';' comment lines, values optionally "double
 * quoted"; a line longer than CONF_INI_LINE_MAX is reported and skipped
 * whole, and reading stops at max_bytes. Returns 0 when no error was
 * reported, -EINVAL when some were, -E2BIG when the file is over
 * max_bytes, error's code when it stopped the reading, or -errno when the
 * file cannot be opened ("PATH: why" reported, except for -ENOENT when
 * must_exist is false, which reports nothing). */
int conf_ini_read(const char *path, bool must_exist, long max_bytes, const struct conf_ini_ops *ops);

/* The settings outside [except_section] whose values differ between a and b,
 * as "name (old -> new), ..." into buf (cut at len); returns how many. */
int conf_changes(const struct conf *a, const struct conf *b, const char *except_section, char *buf, size_t len);

#endif

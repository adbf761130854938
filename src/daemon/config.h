/* config: every effnetd setting in one table (name, type, default, bounds,
 * environment variable, help). Sources in rising precedence: defaults,
 * EFFNETD_<NAME> environment variables, command-line flags --name VALUE.
 * A config file will be one more source over the same table. */
#ifndef EFFNET_DAEMON_CONFIG_H
#define EFFNET_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct conf {
        char *weights;              /* owned strings; NULL when unset */
        char *listen;
        char *labels;
        int64_t precision;          /* enum effnet_precision */
        int64_t padding;            /* enum effnet_padding */
        double bn_eps;              /* 0 = from the weights' source */
        int64_t max_batch;
        double max_delay_ms;
        int64_t queue;
        int64_t workers;
        int64_t threads;
        int64_t http_threads;
        int64_t max_body_bytes;
        int64_t max_body_total;
        int64_t max_images;
        int64_t max_pixels;
        int64_t max_connections;
        int64_t connection_timeout;
        int64_t deadline_ms;
        int64_t retry_after;
        int64_t drain_timeout;
        bool jpeg_fast;
        bool access_log;
};

/* Fills c from defaults, the environment and argv (argv[0] is skipped).
 * Returns 0, or -EINVAL with a message naming the setting and its source.
 * c is owned by the caller (conf_free) on success only. */
int conf_load(int argc, char **argv, struct conf *c, char *err, size_t err_len);
void conf_free(struct conf *c);

/* Prints one line per setting: flag, environment variable, default, help. */
void conf_usage(FILE *f);

/* Prints the settings in effect on one line of name=value pairs. */
void conf_print(FILE *f, const struct conf *c);

#endif

/* log: effnetd's log lines on stderr. Plain text ("effnetd: message"), with
 * a syslog priority prefix ("<6>") when stderr is connected to journald
 * (JOURNAL_STREAM names it), or one JSON object per line. Each line is one
 * write(2), so lines of several threads never mix. Thread-safe after
 * log_setup. */
#ifndef EFFNET_DAEMON_LOG_H
#define EFFNET_DAEMON_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

struct log_access {
        const char *request_id;
        const char *client;       /* numeric address */
        const char *method;
        const char *path;         /* without the query */
        int status;
        const char *error;        /* error code, or NULL */
        size_t bytes_in;          /* request body */
        size_t bytes_out;         /* answer body */
        int images;
        double queue_ms;          /* waiting for a worker; < 0 when never queued */
        double inference_ms;      /* forward passes */
        int batch_size;           /* images in its (largest) forward pass; 0 if none */
        double ms;                /* headers received -> answer queued */
};

/* json: one JSON object per line; otherwise text, with priority prefixes
 * when JOURNAL_STREAM matches stderr. */
void log_setup(const char *prog, bool json);

/* prio: LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG. */
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void log_access(const struct log_access *a);

#endif

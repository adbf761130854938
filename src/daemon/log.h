/* log: effnetd's log lines on stderr. Plain text ("effnetd: message"), with
 * a syslog priority prefix ("<6>") when stderr is connected to journald
 * (JOURNAL_STREAM names it), or one JSON object per line. Each line is one
 * write(2), so lines of several threads never mix. Under journald (stderr
 * the socket JOURNAL_STREAM names, text format) each access record goes to
 * the journal as fields too (REQUEST_ID=, CLIENT=, METHOD=, PATH=, STATUS=,
 * ERROR=, BYTES_IN=, BYTES_OUT=, IMAGES=, QUEUE_MS=, INFERENCE_MS=,
 * BATCH_SIZE=, DURATION_MS=, with the line as MESSAGE=), so that
 * `journalctl -u effnetd STATUS=503` finds them. Thread-safe after
 * log_setup.
 *
 *   log_setup("effnetd", false);
 *   log_msg(LOG_INFO, "listening on %s", url);
 *   log_access(&record);     // from http's access_log callback
 */
#ifndef EFFNET_DAEMON_LOG_H
#define EFFNET_DAEMON_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

#include "access.h"

/* json: one JSON object per line; otherwise text, with priority prefixes
 * when JOURNAL_STREAM matches stderr. */
void log_setup(const char *prog, bool json);

/* prio: LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG. */
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One access line (LOG_INFO) for an answered request, or its journal
 * record (see above); if the journal refuses one, the line is written and
 * every later record is a line too. */
void log_access(const struct http_access *a);

struct iovec;
/* Where journal records go: sd_journal_sendv (NULL restores it), or a
 * test's fake with its signature (0, or a negative errno). Call before
 * log_setup, from one thread. */
void log_set_journal_sender(int (*sendv)(const struct iovec *iov, int n));

#endif

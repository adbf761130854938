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

#include "access.h"

/* json: one JSON object per line; otherwise text, with priority prefixes
 * when JOURNAL_STREAM matches stderr. */
void log_setup(const char *prog, bool json);

/* prio: LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG. */
void log_msg(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One access line (LOG_INFO) for an answered request. */
void log_access(const struct http_access *a);

#endif

/* log: effnetd's log lines on stderr (text, journald prefixes, JSON), and
 * access records as journal fields when stderr is journald's stream. */
#include "log.h"
#include "util.h"

#include <errno.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "effnetd";
static bool log_json;
static bool log_journal;   /* stderr is journald's stream: prefix <prio> */
static bool log_fields;    /* ... and a socket: access records as journal fields */
static atomic_bool fields_failed;   /* the journal refused one: stream lines from then on */
static int (*journal_sendv)(const struct iovec *iov, int n) = sd_journal_sendv;

/* JOURNAL_STREAM is "DEV:INODE" of the stream systemd connected; it only
 * counts when stderr still is that stream (not redirected by a wrapper).
 * journald's end is always a socket; ret_socket says whether stderr is. */
static bool stderr_is_journal(bool *ret_socket)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
                return false;
        *ret_socket = S_ISSOCK(st.st_mode);
        return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_setup(const char *prog, bool json)
{
        bool sock = false;

        log_prog = prog;
        log_json = json;
        log_journal = stderr_is_journal(&sock);
        log_fields = log_journal && sock && !json;
        atomic_store(&fields_failed, false);
}

void log_set_journal_sender(int (*sendv)(const struct iovec *iov, int n))
{
        journal_sendv = sendv ? sendv : sd_journal_sendv;
}

static void write_line(const char *s, size_t n)
{
        while (n > 0) {
                ssize_t w = write(STDERR_FILENO, s, n);
                if (w <= 0)
                        return;
                s += w;
                n -= (size_t)w;
        }
}

static const char *level_name(int prio)
{
        switch (prio) {
        case LOG_EMERG: case LOG_ALERT: case LOG_CRIT: case LOG_ERR: return "error";
        case LOG_WARNING: return "warning";
        case LOG_NOTICE: return "notice";
        case LOG_DEBUG: return "debug";
        default: return "info";
        }
}

static void timestamp(char *buf, size_t n)
{
        struct timespec ts;
        struct tm tm;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + k, n - k, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* Adds "ts", "level" and "msg", prints obj as one line and frees it. */
static void emit_json(json_t *obj, int prio, const char *msg)
{
        char ts[40];

        timestamp(ts, sizeof ts);
        json_object_set_new(obj, "ts", json_string(ts));
        json_object_set_new(obj, "level", json_string(level_name(prio)));
        json_object_set_new(obj, "msg", json_string(msg));
        char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(obj);
        if (!s)
                return;
        size_t n = strlen(s);
        char *line = realloc(s, n + 2);
        if (!line) {
                free(s);
                return;
        }
        line[n] = '\n';
        write_line(line, n + 1);
        free(line);
}

static void emit_text(int prio, const char *msg)
{
        char line[2048];
        int n;

        if (log_journal)
                n = snprintf(line, sizeof line, "<%d>%s\n", prio, msg);
        else
                n = snprintf(line, sizeof line, "%s: %s\n", log_prog, msg);
        if (n < 0)
                return;
        if ((size_t)n >= sizeof line) {
                n = sizeof line - 1;
                line[n - 1] = '\n';
        }
        write_line(line, (size_t)n);
}

/* Messages carry bytes that clients sent (paths, media types, request
 * ids): escaped, they can neither start a forged line (with a journald
 * priority) nor make a JSON line fail on invalid UTF-8. */
void log_msg(int prio, const char *fmt, ...)
{
        char raw[1536], msg[1536];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(raw, sizeof raw, fmt, ap);
        va_end(ap);
        str_escape(raw, msg, sizeof msg);
        if (log_json) {
                json_t *o = json_object();
                if (o)
                        emit_json(o, prio, msg);
        } else {
                emit_text(prio, msg);
        }
}

/* One access record as journal fields, with the text line as MESSAGE, so
 * that `journalctl -u effnetd STATUS=503` or `REQUEST_ID=...` finds it.
 * method and path are escaped already. A refusal (journald gone, the
 * record too large) is remembered: the caller writes the line instead. */
static int send_access_fields(const struct http_access *a, const char *method, const char *path,
                              const char *msg)
{
        char message[1600], f[20][600], id[520], client[80], error[80];
        struct iovec iov[21];
        int n = 0;

        str_escape(a->request_id, id, sizeof id);
        str_escape(a->client, client, sizeof client);
        snprintf(message, sizeof message, "MESSAGE=%s", msg);
        snprintf(f[n++], sizeof f[0], "PRIORITY=%d", LOG_INFO);
        snprintf(f[n++], sizeof f[0], "SYSLOG_IDENTIFIER=%.64s", log_prog);
        snprintf(f[n++], sizeof f[0], "REQUEST_ID=%s", id);
        snprintf(f[n++], sizeof f[0], "CLIENT=%s", client);
        snprintf(f[n++], sizeof f[0], "METHOD=%s", method);
        snprintf(f[n++], sizeof f[0], "PATH=%.580s", path);
        snprintf(f[n++], sizeof f[0], "STATUS=%d", a->status);
        if (a->error) {
                str_escape(a->error, error, sizeof error);
                snprintf(f[n++], sizeof f[0], "ERROR=%s", error);
        }
        snprintf(f[n++], sizeof f[0], "BYTES_IN=%zu", a->body_bytes);
        snprintf(f[n++], sizeof f[0], "BYTES_OUT=%zu", a->answer_bytes);
        snprintf(f[n++], sizeof f[0], "IMAGES=%d", a->images);
        snprintf(f[n++], sizeof f[0], "QUEUE_MS=%.1f", a->queue_ms < 0 ? 0.0 : a->queue_ms);
        snprintf(f[n++], sizeof f[0], "INFERENCE_MS=%.1f", a->inference_ms);
        snprintf(f[n++], sizeof f[0], "BATCH_SIZE=%d", a->batch_size);
        snprintf(f[n++], sizeof f[0], "DURATION_MS=%.1f", a->ms);
        if (a->model) {
                snprintf(f[n++], sizeof f[0], "MODEL=%.200s", a->model);
                snprintf(f[n++], sizeof f[0], "MODEL_VERSION=%lld", a->version);
        }
        /* The W3C trace context: hex digits only (server/trace.h). */
        if (a->trace_id && *a->trace_id) {
                snprintf(f[n++], sizeof f[0], "TRACE_ID=%.32s", a->trace_id);
                snprintf(f[n++], sizeof f[0], "SPAN_ID=%.16s", a->span_id);
                if (a->parent_id && *a->parent_id)
                        snprintf(f[n++], sizeof f[0], "PARENT_SPAN_ID=%.16s", a->parent_id);
        }
        iov[0] = (struct iovec){ .iov_base = message, .iov_len = strlen(message) };
        for (int i = 0; i < n; i++)
                iov[i + 1] = (struct iovec){ .iov_base = f[i], .iov_len = strlen(f[i]) };
        if (journal_sendv(iov, n + 1) < 0) {
                atomic_store(&fields_failed, true);
                return -EIO;
        }
        return 0;
}

void log_access(const struct http_access *a)
{
        char path[512], method[64];

        /* The method and path are the client's bytes. */
        str_escape(a->path, path, sizeof path);
        str_escape(a->method, method, sizeof method);
        if (log_json) {
                json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:i, s:f, s:f, s:i, s:f}",
                                      "request_id", a->request_id, "client", a->client, "method", method,
                                      "path", path, "status", a->status, "bytes_in", (json_int_t)a->body_bytes,
                                      "bytes_out", (json_int_t)a->answer_bytes, "images", a->images, "queue_ms",
                                      a->queue_ms < 0 ? 0.0 : a->queue_ms, "inference_ms", a->inference_ms,
                                      "batch_size", a->batch_size, "ms", a->ms);
                if (!o)
                        return;
                if (a->error)
                        json_object_set_new(o, "error", json_string(a->error));
                if (a->model) {
                        json_object_set_new(o, "model", json_string(a->model));
                        json_object_set_new(o, "version", json_integer(a->version));
                }
                if (a->trace_id && *a->trace_id) {
                        json_object_set_new(o, "trace_id", json_string(a->trace_id));
                        json_object_set_new(o, "span_id", json_string(a->span_id));
                        if (a->parent_id && *a->parent_id)
                                json_object_set_new(o, "parent_span_id", json_string(a->parent_id));
                }
                emit_json(o, LOG_INFO, "access");
                return;
        }
        char msg[1536];
        snprintf(msg, sizeof msg,
                 "access id=%s client=%s \"%s %s\" %d%s%s bytes_in=%zu bytes_out=%zu images=%d queue_ms=%.1f "
                 "inference_ms=%.1f batch=%d ms=%.1f%s%s%s%s",
                 a->request_id, a->client, method, path, a->status, a->error ? " " : "",
                 a->error ? a->error : "", a->body_bytes, a->answer_bytes, a->images,
                 a->queue_ms < 0 ? 0.0 : a->queue_ms,
                 a->inference_ms, a->batch_size, a->ms, a->trace_id && *a->trace_id ? " trace_id=" : "",
                 a->trace_id ? a->trace_id : "", a->span_id && *a->span_id ? " span_id=" : "",
                 a->span_id ? a->span_id : "");
        if (a->model) {
                size_t n = strlen(msg);
                snprintf(msg + n, sizeof msg - n, " model=%.200s version=%lld", a->model, a->version);
        }
        if (log_fields && !atomic_load(&fields_failed) && send_access_fields(a, method, path, msg) == 0)
                return;
        emit_text(LOG_INFO, msg);
}

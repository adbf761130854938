/* util: small helpers shared by every module (error messages, time, sizes). */
#ifndef EFFNET_UTIL_H
#define EFFNET_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Formats a message into err (if err and err_len are non-zero) and returns
 * code, so that failures read `return err_set(err, len, -EINVAL, "...")`. */
int err_set(char *err, size_t err_len, int code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/* Copies the text in to out (out_len > 0; always NUL-terminated) with every
 * byte that is not printable UTF-8 written as \xHH: control characters
 * (newlines included), DEL, and bytes of invalid, overlong or surrogate
 * UTF-8 sequences; a backslash becomes \\ so that the escaping cannot be
 * forged. What a client sends can then go into a log line or a JSON string
 * as it is. Truncates at a character boundary; returns the length written. */
size_t str_escape(const char *in, char *out, size_t out_len);

/* Offset of the first byte of s that str_escape would escape (backslashes
 * aside), or -1 when s is printable UTF-8 throughout. */
ptrdiff_t str_unprintable(const char *s);

/* The parsers of every number and switch that a user or a client gives us:
 * settings, command-line flags, query strings and headers. The whole of s
 * must be the value: no leading space or '+', nothing after it. Each returns
 * 0 and writes *ret, or -EINVAL with a message in err (may be NULL) that
 * names `what`, quotes s (escaped, shortened) and gives the bounds:
 *   "queue 'lots' is not an integer in 1..65536"
 *   int64_t q;
 *   if (parse_int("queue", v, 1, 65536, err, sizeof err, &q) < 0) fail(err);
 */
int parse_int(const char *what, const char *s, int64_t min, int64_t max, char *err, size_t err_len,
              int64_t *ret);
/* An integer with an optional 1024-based suffix k, M or G ("10M"). */
int parse_size(const char *what, const char *s, int64_t min, int64_t max, char *err, size_t err_len,
               int64_t *ret);
/* A finite decimal number. */
int parse_double(const char *what, const char *s, double min, double max, char *err, size_t err_len,
                 double *ret);
/* true/false, yes/no, on/off, 1/0, in any case. */
int parse_bool(const char *what, const char *s, char *err, size_t err_len, bool *ret);

/* A duration, returned in microseconds: a decimal number with one unit,
 * us, ms, s, m or h ("250ms", "1.5s", "2m"); a bare number is in unit_us
 * (so that settings that took plain seconds keep their meaning). The
 * result must be a whole multiple of res_us (the finest step its user
 * can honour, e.g. a whole second for a socket timeout) and within
 * min_us..max_us; larger than int64_t microseconds is out of bounds.
 *   int64_t t;
 *   if (parse_duration("body-timeout", v, PARSE_S, PARSE_S, 0, 86400 * PARSE_S, err, sizeof err, &t) < 0)
 *           fail(err);   // "body-timeout '5d' is not a duration in 0..86400s (us, ms, s, m or h; bare: s)"
 */
#define PARSE_US INT64_C(1)
#define PARSE_MS INT64_C(1000)
#define PARSE_S  INT64_C(1000000)
#define PARSE_M  (60 * PARSE_S)
#define PARSE_H  (3600 * PARSE_S)
int parse_duration(const char *what, const char *s, int64_t unit_us, int64_t res_us, int64_t min_us,
                   int64_t max_us, char *err, size_t err_len, int64_t *ret_us);

/* us as a number of unit_us (us, ms, s, m or h) with the unit's name, e.g.
 * 1500 us in PARSE_MS is "1.5ms"; without_unit leaves the name out, which
 * parse_duration with that unit reads back. Returns the length (snprintf). */
int duration_format(int64_t us, int64_t unit_us, bool without_unit, char *buf, size_t len);

/* Monotonic clock in nanoseconds. */
int64_t time_now_ns(void);

/* Peak resident set size of this process in bytes (VmHWM), or -1. */
int64_t proc_peak_rss(void);

/* This process's resources from /proc; a field is -1 when unknown. */
struct proc_stats {
        int64_t rss_bytes;
        double cpu_seconds;          /* user + system */
        int open_fds;
        int64_t max_fds;             /* soft RLIMIT_NOFILE */
        double start_time_seconds;   /* since the epoch */
};
void proc_get_stats(struct proc_stats *ret_stats);

/* Number of CPUs this process may run on: affinity mask, capped by the
 * cgroup v2/v1 CPU quota (rounded up). At least 1. */
int cpu_usable_count(void);

/* The CPU quota that binds a process, in CPUs (0 = none): the smallest
 * cpu.max (v2) or cpu.cfs_quota_us / cpu.cfs_period_us (v1) of its cgroup
 * and every ancestor. root: where cgroups are mounted ("/sys/fs/cgroup");
 * self_cgroup: the text of /proc/self/cgroup. -EBADMSG for an overlong line. */
int cgroup_cpu_quota(const char *root, const char *self_cgroup, double *ret_cpus);

/* The value of a hex digit (either case), or -1. */
int hex_value(char c);

/* "HOST:PORT", "[V6]:PORT" or ":PORT" (every address) to a socket address;
 * what names the setting in errors ("listen", "grpc-listen"). ret_len may
 * be NULL. */
struct sockaddr_storage;
int parse_listen(const char *what, const char *listen, struct sockaddr_storage *ret_addr, size_t *ret_len,
                 char *err, size_t err_len);

/* s without leading and trailing white space: advances past the leading,
 * writes a NUL over the first trailing one. */
char *str_trim(char *s);

#endif

/* util: small helpers shared by every module (error messages, time, sizes). */
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <ctype.h>
#include <dirent.h>
#include <netdb.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int err_set(char *err, size_t err_len, int code, const char *fmt, ...)
{
        if (err && err_len > 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err, err_len, fmt, ap);
                va_end(ap);
        }
        return code;
}

/* Length of the valid UTF-8 sequence at s (up to n bytes) encoding a
 * printable character, or 0. */
static size_t utf8_char(const unsigned char *s, size_t n)
{
        unsigned c = s[0];
        size_t len;
        unsigned min, cp;

        if (c >= 0x20 && c < 0x7f)
                return 1;
        if (c < 0xc2 || c > 0xf4)
                return 0;       /* ASCII controls, DEL, continuation bytes, overlong leads */
        len = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
        cp = c & (0x7f >> len);
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0))
                return 0;       /* overlong, out of range, surrogate, C1 control */
        return len;
}

size_t str_escape(const char *in, char *out, size_t out_len)
{
        const unsigned char *s = (const unsigned char *)in;
        size_t n = strlen(in), o = 0;

        for (size_t i = 0; i < n;) {
                size_t k = s[i] == '\\' ? 0 : utf8_char(s + i, n - i);
                char esc[5];
                const char *piece = (const char *)s + i;
                size_t plen = k;
                if (k == 0) {
                        if (s[i] == '\\')
                                memcpy(esc, "\\\\", 3);
                        else
                                snprintf(esc, sizeof esc, "\\x%02x", s[i]);
                        piece = esc;
                        plen = strlen(esc);
                        k = 1;
                }
                if (o + plen >= out_len)
                        break;
                memcpy(out + o, piece, plen);
                o += plen;
                i += k;
        }
        out[o] = 0;
        return o;
}

ptrdiff_t str_unprintable(const char *s)
{
        const unsigned char *u = (const unsigned char *)s;
        size_t n = strlen(s);

        for (size_t i = 0; i < n;) {
                size_t k = utf8_char(u + i, n - i);
                if (k == 0)
                        return (ptrdiff_t)i;
                i += k;
        }
        return -1;
}

int64_t time_now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t proc_peak_rss(void)
{
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        int64_t kb = -1;

        if (!f)
                return -1;
        while (fgets(line, sizeof line, f))
                if (sscanf(line, "VmHWM: %" SCNd64 " kB", &kb) == 1)
                        break;
        fclose(f);
        return kb < 0 ? -1 : kb * 1024;
}

/* Reads the first line of dir/name into buf; 0 or -errno. */
static int read_line_at(const char *dir, const char *name, char *buf, size_t n)
{
        char path[4096];
        FILE *f;

        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
                return -ENAMETOOLONG;
        f = fopen(path, "re");
        if (!f)
                return -errno;
        int r = fgets(buf, (int)n, f) ? 0 : -EIO;
        fclose(f);
        return r;
}

/* The quota of one cgroup directory in CPUs; 0 when it sets none. */
static double dir_quota(const char *dir, bool v2)
{
        char buf[128];
        long long q, p;

        if (v2) {
                /* "max 100000" (no limit) or "150000 100000" */
                if (read_line_at(dir, "cpu.max", buf, sizeof buf) == 0 && sscanf(buf, "%lld %lld", &q, &p) == 2 &&
                    q > 0 && p > 0)
                        return (double)q / (double)p;
                return 0;
        }
        if (read_line_at(dir, "cpu.cfs_quota_us", buf, sizeof buf) < 0 || sscanf(buf, "%lld", &q) != 1 || q <= 0)
                return 0;
        if (read_line_at(dir, "cpu.cfs_period_us", buf, sizeof buf) < 0 || sscanf(buf, "%lld", &p) != 1 || p <= 0)
                return 0;
        return (double)q / (double)p;
}

/* The smallest quota on the way from mount/path up to mount (a parent's
 * limit binds its children too). */
static double walk_quota(const char *mount, const char *path, bool v2)
{
        char dir[4096];
        double best = 0;

        if ((size_t)snprintf(dir, sizeof dir, "%s%s", mount, path) >= sizeof dir)
                return 0;
        size_t root_len = strlen(mount);
        for (;;) {
                double q = dir_quota(dir, v2);
                if (q > 0 && (best == 0 || q < best))
                        best = q;
                char *slash = strrchr(dir, '/');
                if (!slash || (size_t)(slash - dir) < root_len)
                        break;
                *slash = '\0';
        }
        return best;
}

int cgroup_cpu_quota(const char *root, const char *self_cgroup, double *ret_cpus)
{
        char line[4096], mount[4096];
        double best = 0;
        const char *p = self_cgroup;

        /* /proc/self/cgroup: "0::/path" (v2) or "N:cpu,cpuacct:/path" (v1). */
        while (p && *p) {
                const char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t)(nl - p) : strlen(p);
                if (len >= sizeof line)
                        return -EBADMSG;
                memcpy(line, p, len);
                line[len] = '\0';
                p = nl ? nl + 1 : NULL;

                char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
                if (!c1 || !c2 || c2[1] != '/')
                        continue;
                *c2 = '\0';
                const char *controllers = c1 + 1, *path = c2 + 1;
                double q = 0;
                if (strcmp(line, "0:") == 0 && *controllers == '\0') {
                        snprintf(mount, sizeof mount, "%s", root);
                        q = walk_quota(mount, strcmp(path, "/") == 0 ? "" : path, true);
                } else {
                        /* v1: the cpu controller, alone or co-mounted. */
                        char list[256];
                        snprintf(list, sizeof list, ",%s,", controllers);
                        if (!strstr(list, ",cpu,"))
                                continue;
                        /* Try the mount named after the controllers, then plain "cpu". */
                        const char *names[] = { controllers, "cpu" };
                        for (size_t i = 0; i < ARRAY_SIZE(names) && q == 0; i++) {
                                snprintf(mount, sizeof mount, "%s/%s", root, names[i]);
                                q = walk_quota(mount, strcmp(path, "/") == 0 ? "" : path, false);
                                /* In a cgroup namespace the path may not exist under the
                                 * mount: the mount's root is then our cgroup. */
                                if (q == 0)
                                        q = dir_quota(mount, false);
                        }
                }
                if (q > 0 && (best == 0 || q < best))
                        best = q;
        }
        *ret_cpus = best;
        return 0;
}

int cpu_usable_count(void)
{
        cpu_set_t set;
        char self[8192];
        double quota = 0;
        int n = 1;

        if (sched_getaffinity(0, sizeof set, &set) == 0)
                n = CPU_COUNT(&set);
        FILE *f = fopen("/proc/self/cgroup", "re");
        if (f) {
                size_t len = fread(self, 1, sizeof self - 1, f);
                self[len] = '\0';
                fclose(f);
                if (cgroup_cpu_quota("/sys/fs/cgroup", self, &quota) < 0)
                        quota = 0;
        }
        if (quota > 0 && ceil(quota) < n)
                n = (int)ceil(quota);
        return n < 1 ? 1 : n;
}

void proc_get_stats(struct proc_stats *ret_stats)
{
        struct proc_stats st = { .rss_bytes = -1, .cpu_seconds = -1, .open_fds = -1, .max_fds = -1,
                                 .start_time_seconds = -1 };
        long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
        char buf[1024];
        FILE *f;

        /* /proc/self/stat: the command may hold spaces; fields follow its ')'. */
        f = fopen("/proc/self/stat", "re");
        if (f) {
                size_t n = fread(buf, 1, sizeof buf - 1, f);
                buf[n] = '\0';
                fclose(f);
                char *p = strrchr(buf, ')');
                unsigned long long ut, stt, start;
                long long rss;
                /* fields 3.. after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt
                 * cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss */
                if (p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d"
                                       " %*d %llu %*u %lld", &ut, &stt, &start, &rss) == 4 && tck > 0) {
                        st.cpu_seconds = (double)(ut + stt) / (double)tck;
                        st.rss_bytes = rss * page;
                        f = fopen("/proc/stat", "re");
                        if (f) {
                                unsigned long long btime;
                                while (fgets(buf, sizeof buf, f))
                                        if (sscanf(buf, "btime %llu", &btime) == 1) {
                                                st.start_time_seconds = (double)btime + (double)start / (double)tck;
                                                break;
                                        }
                                fclose(f);
                        }
                }
        }
        DIR *d = opendir("/proc/self/fd");
        if (d) {
                int n = 0;
                struct dirent *de;
                while ((de = readdir(d)))
                        if (de->d_name[0] != '.')
                                n++;
                closedir(d);
                st.open_fds = n - 1;  /* the directory's own descriptor */
        }
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
                st.max_fds = rl.rlim_cur == RLIM_INFINITY ? -1 : (int64_t)rl.rlim_cur;
        *ret_stats = st;
}

/* Digits with an optional leading '-' (no space, no '+'), into *ret with
 * *ret_end after them. */
static int parse_digits(const char *s, int64_t *ret, const char **ret_end)
{
        const char *p = s + (*s == '-');
        char *end;

        if (*p < '0' || *p > '9')
                return -EINVAL;
        errno = 0;
        long long x = strtoll(s, &end, 10);
        if (errno)
                return -EINVAL;
        *ret = x;
        *ret_end = end;
        return 0;
}

static int parse_fail(const char *what, const char *s, const char *kind, double min, double max, char *err,
                      size_t err_len)
{
        char shown[48];
        str_escape(s, shown, sizeof shown);
        if (min == 0 && max == 0)
                return err_set(err, err_len, -EINVAL, "%s '%s' is not %s", what, shown, kind);
        return err_set(err, err_len, -EINVAL, "%s '%s' is not %s in %.15g..%.15g", what, shown, kind, min, max);
}

int parse_int(const char *what, const char *s, int64_t min, int64_t max, char *err, size_t err_len, int64_t *ret)
{
        const char *end;
        int64_t x;

        if (!s || parse_digits(s, &x, &end) < 0 || *end || x < min || x > max)
                return parse_fail(what, s ? s : "", "an integer", (double)min, (double)max, err, err_len);
        *ret = x;
        return 0;
}

int parse_size(const char *what, const char *s, int64_t min, int64_t max, char *err, size_t err_len, int64_t *ret)
{
        const char *end;
        int64_t x, mul = 1;

        if (!s || parse_digits(s, &x, &end) < 0)
                goto fail;
        if (*end && !end[1]) {
                switch (*end) {
                case 'k': case 'K': mul = 1LL << 10; end++; break;
                case 'M': mul = 1LL << 20; end++; break;
                case 'G': mul = 1LL << 30; end++; break;
                default: break;
                }
        }
        if (*end || (x != 0 && (x > INT64_MAX / mul || x < INT64_MIN / mul)) || x * mul < min || x * mul > max)
                goto fail;
        *ret = x * mul;
        return 0;
fail:
        return parse_fail(what, s ? s : "", "an integer", (double)min, (double)max, err, err_len);
}

int parse_double(const char *what, const char *s, double min, double max, char *err, size_t err_len, double *ret)
{
        char *end;

        if (!s || !*s || *s == ' ' || *s == '+' || (*s >= '\t' && *s <= '\r'))
                goto fail;
        errno = 0;
        double x = strtod(s, &end);
        if (errno || *end || !isfinite(x) || x < min || x > max)
                goto fail;
        *ret = x;
        return 0;
fail:
        return parse_fail(what, s ? s : "", "a number", min, max, err, err_len);
}

int parse_bool(const char *what, const char *s, char *err, size_t err_len, bool *ret)
{
        static const char *const yes[] = { "1", "true", "yes", "on" }, *const no[] = { "0", "false", "no", "off" };

        for (size_t i = 0; s && i < ARRAY_SIZE(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0)
                        return *ret = true, 0;
                if (strcasecmp(s, no[i]) == 0)
                        return *ret = false, 0;
        }
        return parse_fail(what, s ? s : "", "true or false", 0, 0, err, err_len);
}

static const struct {
        const char *name;
        int64_t us;
} duration_units[] = { { "us", PARSE_US }, { "ms", PARSE_MS }, { "s", PARSE_S }, { "m", PARSE_M }, { "h", PARSE_H } };

static const char *duration_unit_name(int64_t unit_us)
{
        for (size_t i = 0; i < ARRAY_SIZE(duration_units); i++)
                if (duration_units[i].us == unit_us)
                        return duration_units[i].name;
        return "us";
}

int duration_format(int64_t us, int64_t unit_us, bool without_unit, char *buf, size_t len)
{
        const char *name = duration_unit_name(unit_us);
        int64_t unit = strcmp(name, "us") == 0 ? 1 : unit_us, p10 = 1;
        char frac[24] = "";

        while (p10 < unit)
                p10 *= 10;
        if (us % unit != 0 && p10 != unit)   /* a fraction of m or h: in the finest whole unit instead */
                return duration_format(us, us % PARSE_S == 0 ? PARSE_S : us % PARSE_MS == 0 ? PARSE_MS : PARSE_US,
                                       false, buf, len);
        if (us % unit != 0) {
                /* p10 + rest has the digits below the point after its leading 1. */
                snprintf(frac, sizeof frac, "%lld", (long long)(p10 + us % unit));
                frac[0] = '.';
                for (size_t n = strlen(frac); frac[n - 1] == '0'; n--)
                        frac[n - 1] = '\0';
        }
        return snprintf(buf, len, "%lld%s%s", (long long)(us / unit), frac, without_unit ? "" : name);
}

/* "DIGITS[.DIGITS]" into whole and a fraction num / den (den <= 10^9; more
 * fractional digits must be zeros), *ret_end after it. */
static int parse_decimal(const char *s, int64_t *ret_whole, int64_t *ret_num, int64_t *ret_den, const char **ret_end)
{
        int64_t whole = 0, num = 0, den = 1;
        const char *p = s;

        if (*p < '0' || *p > '9')
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (whole > (INT64_MAX - (*p - '0')) / 10)
                        return -ERANGE;
                whole = whole * 10 + (*p - '0');
        }
        if (*p == '.') {
                p++;
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                for (; *p >= '0' && *p <= '9'; p++) {
                        if (den < 1000000000) {
                                num = num * 10 + (*p - '0');
                                den *= 10;
                        } else if (*p != '0') {
                                return -ERANGE;   /* finer than a nanosecond of an hour: never whole us */
                        }
                }
        }
        *ret_whole = whole;
        *ret_num = num;
        *ret_den = den;
        *ret_end = p;
        return 0;
}

int parse_duration(const char *what, const char *s, int64_t unit_us, int64_t res_us, int64_t min_us,
                   int64_t max_us, char *err, size_t err_len, int64_t *ret_us)
{
        int64_t whole, num, den, unit = unit_us, x;
        const char *end;

        if (!s || parse_decimal(s, &whole, &num, &den, &end) < 0)
                goto fail;
        if (*end) {
                unit = 0;
                for (size_t i = 0; i < ARRAY_SIZE(duration_units); i++)
                        if (strcmp(end, duration_units[i].name) == 0)
                                unit = duration_units[i].us;
                if (!unit)
                        goto fail;
        }
        /* whole * unit + num * unit / den, exactly; num * unit < 10^9 * 3.6e9 fits. */
        if (whole > INT64_MAX / unit || (num * unit) % den != 0)
                goto fail;
        x = whole * unit;
        if (x > INT64_MAX - (num * unit) / den)
                goto fail;
        x += (num * unit) / den;
        if (x % res_us != 0 || x < min_us || x > max_us)
                goto fail;
        *ret_us = x;
        return 0;
fail:;
        char shown[48], lo[32], hi[32], step[48] = "";
        str_escape(s ? s : "", shown, sizeof shown);
        duration_format(min_us, unit_us, true, lo, sizeof lo);
        duration_format(max_us, unit_us, false, hi, sizeof hi);
        if (res_us > 1) {
                char r[24];
                duration_format(res_us, res_us, false, r, sizeof r);
                snprintf(step, sizeof step, " in steps of %s", r);
        }
        return err_set(err, err_len, -EINVAL, "%s '%s' is not a duration in %s..%s%s (us, ms, s, m or h; bare: %s)",
                       what, shown, lo, hi, step, duration_unit_name(unit_us));
}

int hex_value(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int parse_listen(const char *what, const char *listen, struct sockaddr_storage *ret_addr, size_t *ret_len,
                 char *err, size_t err_len)
{
        char host[256], port[16];
        const char *colon;
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *res = NULL;
        int64_t p;

        if (!listen || !*listen)
                return err_set(err, err_len, -EINVAL, "empty %s address", what);
        if (listen[0] == '[') {
                const char *close = strchr(listen, ']');
                if (!close || close[1] != ':' || (size_t)(close - listen - 1) >= sizeof host)
                        return err_set(err, err_len, -EINVAL, "%s %s: expected [ADDRESS]:PORT", what, listen);
                memcpy(host, listen + 1, (size_t)(close - listen - 1));
                host[close - listen - 1] = '\0';
                colon = close + 1;
        } else {
                colon = strrchr(listen, ':');
                if (!colon || (size_t)(colon - listen) >= sizeof host)
                        return err_set(err, err_len, -EINVAL, "%s %s: expected HOST:PORT", what, listen);
                memcpy(host, listen, (size_t)(colon - listen));
                host[colon - listen] = '\0';
        }
        if (parse_int("port", colon + 1, 0, 65535, NULL, 0, &p) < 0)
                return err_set(err, err_len, -EINVAL, "%s %s: bad port", what, listen);
        snprintf(port, sizeof port, "%lld", (long long)p);
        int r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
        if (r != 0)
                return err_set(err, err_len, -EINVAL, "%s %s: %s", what, listen, gai_strerror(r));
        if (res->ai_addrlen > sizeof *ret_addr) {
                freeaddrinfo(res);
                return err_set(err, err_len, -EINVAL, "%s %s: unsupported address", what, listen);
        }
        memset(ret_addr, 0, sizeof *ret_addr);
        memcpy(ret_addr, res->ai_addr, res->ai_addrlen);
        if (ret_len)
                *ret_len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
}

char *str_trim(char *s)
{
        while (isspace((unsigned char)*s))
                s++;
        size_t n = strlen(s);
        while (n > 0 && isspace((unsigned char)s[n - 1]))
                s[--n] = '\0';
        return s;
}

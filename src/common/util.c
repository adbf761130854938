/* util: small helpers shared by every module (error messages, time, sizes). */
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
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

/* CPU quota of the cgroup this process is in, in CPUs, or 0 if unlimited. */
static double cgroup_cpu_quota(void)
{
        FILE *f;
        char buf[128];
        double quota = 0;

        /* cgroup v2: "max 100000" or "150000 100000" */
        f = fopen("/sys/fs/cgroup/cpu.max", "re");
        if (f) {
                long long q, p;
                if (fgets(buf, sizeof buf, f) && sscanf(buf, "%lld %lld", &q, &p) == 2 && q > 0 && p > 0)
                        quota = (double)q / (double)p;
                fclose(f);
                return quota;
        }
        /* cgroup v1 */
        long long q = -1, p = -1;
        f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "re");
        if (f) {
                if (fscanf(f, "%lld", &q) != 1)
                        q = -1;
                fclose(f);
        }
        f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "re");
        if (f) {
                if (fscanf(f, "%lld", &p) != 1)
                        p = -1;
                fclose(f);
        }
        if (q > 0 && p > 0)
                quota = (double)q / (double)p;
        return quota;
}

int cpu_usable_count(void)
{
        cpu_set_t set;
        int n = 1;

        if (sched_getaffinity(0, sizeof set, &set) == 0)
                n = CPU_COUNT(&set);
        double quota = cgroup_cpu_quota();
        if (quota > 0 && ceil(quota) < n)
                n = (int)ceil(quota);
        return n < 1 ? 1 : n;
}

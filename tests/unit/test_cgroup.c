/* Unit test of the cgroup CPU quota reader (src/common/util.c) on fake
 * cgroup trees: v2 with nested limits, v1 co-mounted controllers, no limit. */
#include "util.h"
#include "check.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static void put(const char *rel, const char *text)
{
        char path[1024], dir[1024];
        snprintf(path, sizeof path, "%s/%s", root, rel);
        /* mkdir -p of the parent */
        snprintf(dir, sizeof dir, "%s", path);
        for (char *p = dir + strlen(root) + 1; (p = strchr(p, '/')); p++) {
                *p = '\0';
                mkdir(dir, 0755);
                *p = '/';
        }
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (f) {
                fputs(text, f);
                fclose(f);
        }
}

static double quota(const char *sub, const char *self)
{
        char mount[512];
        double q = -1;
        snprintf(mount, sizeof mount, "%s/%s", root, sub);
        CHECK(cgroup_cpu_quota(mount, self, &q) == 0);
        return q;
}

int main(void)
{
        snprintf(root, sizeof root, "/tmp/effnet-cgroup-XXXXXX");
        if (!mkdtemp(root)) {
                perror("mkdtemp");
                return 1;
        }

        /* v2: no limit anywhere. */
        put("v2a/cpu.max", "max 100000\n");
        put("v2a/system.slice/cpu.max", "max 100000\n");
        put("v2a/system.slice/effnetd.service/cpu.max", "max 100000\n");
        CHECK(quota("v2a", "0::/system.slice/effnetd.service\n") == 0);

        /* v2: the service's own limit (1.5 CPUs). */
        put("v2b/system.slice/effnetd.service/cpu.max", "150000 100000\n");
        put("v2b/system.slice/cpu.max", "max 100000\n");
        CHECK(fabs(quota("v2b", "0::/system.slice/effnetd.service\n") - 1.5) < 1e-9);

        /* v2: a parent's tighter limit binds the child. */
        put("v2c/kubepods/cpu.max", "50000 100000\n");
        put("v2c/kubepods/pod1/cpu.max", "200000 100000\n");
        put("v2c/kubepods/pod1/ctr/cpu.max", "max 100000\n");
        CHECK(fabs(quota("v2c", "0::/kubepods/pod1/ctr\n") - 0.5) < 1e-9);

        /* v2 in a cgroup namespace: "0::/" reads the mount's root. */
        put("v2d/cpu.max", "300000 100000\n");
        CHECK(fabs(quota("v2d", "0::/\n") - 3.0) < 1e-9);

        /* v1: cpu,cpuacct co-mounted; -1 quota is none. */
        put("v1a/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "200000\n");
        put("v1a/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
        put("v1a/cpu,cpuacct/docker/cpu.cfs_quota_us", "-1\n");
        put("v1a/cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n");
        const char *self_v1 = "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n";
        CHECK(fabs(quota("v1a", self_v1) - 2.0) < 1e-9);

        /* v1 in a namespace: the path is not under the mount; its root holds the limit. */
        put("v1b/cpu/cpu.cfs_quota_us", "25000\n");
        put("v1b/cpu/cpu.cfs_period_us", "100000\n");
        CHECK(fabs(quota("v1b", "4:cpu:/elsewhere/x\n") - 0.25) < 1e-9);

        /* Nothing mounted, garbage lines, an empty file. */
        CHECK(quota("none", "0::/a/b\n") == 0);
        CHECK(quota("none", "garbage\n::\n5:cpu\n") == 0);
        CHECK(quota("none", "") == 0);
        put("bad/cpu.max", "lots 0\n");
        CHECK(quota("bad", "0::/\n") == 0);

        /* An overlong line is an error, not a crash. */
        char *longline = malloc(10000);
        memset(longline, 'x', 9999);
        longline[9999] = '\0';
        double q;
        CHECK(cgroup_cpu_quota(root, longline, &q) == -EBADMSG);
        free(longline);

        /* The live value is at least 1 whatever the machine. */
        CHECK(cpu_usable_count() >= 1);

        char cmd[512];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
        if (system(cmd) != 0)
                fprintf(stderr, "could not remove %s\n", root);
        return CHECK_DONE();
}

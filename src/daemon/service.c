/* service: sd_notify, watchdog and socket activation for effnetd (service.h). */
#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>

void service_notify_ready(const char *status)
{
        sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void service_notify_status(const char *fmt, ...)
{
        char buf[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        sd_notifyf(0, "STATUS=%s", buf);
}

void service_extend_timeout(uint64_t usec)
{
        sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
}

void service_notify_reloading(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        sd_notifyf(0, "RELOADING=1\nSTATUS=reloading the weights\nMONOTONIC_USEC=%llu",
                   (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL);
}

void service_notify_stopping(const char *status)
{
        sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}

void service_notify_watchdog(void)
{
        sd_notify(0, "WATCHDOG=1");
}

uint64_t service_watchdog_period_usec(void)
{
        uint64_t usec = 0;

        return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

int service_take_listen_fd(int *ret_fd)
{
        int n = sd_listen_fds(1);

        if (n <= 0) {
                *ret_fd = -1;
                return 0;
        }
        if (n > 1 || sd_is_socket(SD_LISTEN_FDS_START, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
                return -EINVAL;
        int fd = SD_LISTEN_FDS_START;
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        *ret_fd = fd;
        return 0;
}

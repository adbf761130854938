/* service: effnetd's side of its service manager, systemd (the only
 * module that includes sd-daemon.h): readiness and status notifications
 * for Type=notify, the service watchdog, and socket activation
 * (LISTEN_FDS). Every call is a no-op without systemd (no NOTIFY_SOCKET,
 * no LISTEN_FDS), so the daemon behaves the same everywhere else. The
 * prefix is ours: libsystemd's functions are sd_*.
 *
 *   int fd;
 *   if (service_take_listen_fd(&fd) < 0)
 *           return -EINVAL;
 *   ... load, listen on fd (or a port when fd is -1) ...
 *   service_notify_ready("serving");
 *   while (serving)
 *           if (workers_make_progress())
 *                   service_notify_watchdog();
 *   service_notify_stopping("draining");
 */
#ifndef EFFNET_DAEMON_SERVICE_H
#define EFFNET_DAEMON_SERVICE_H

#include <stdint.h>

/* READY=1 with a STATUS= line. Call once the model is loaded and the
 * executors are warm, and again after a reload. */
void service_notify_ready(const char *status);

/* STATUS= only (what is served and at which rate). */
void service_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* EXTEND_TIMEOUT_USEC=: the start (or reload) may take usec more from now,
 * sent while the weights download, so that TimeoutStartSec= counts from
 * the last progress rather than from the start. */
void service_extend_timeout(uint64_t usec);
/* RELOADING=1 with MONOTONIC_USEC= (systemd's Type=notify-reload protocol). */
void service_notify_reloading(void);

/* STOPPING=1 with a STATUS= line. */
void service_notify_stopping(const char *status);

/* WATCHDOG=1: call only after checking that the workers make progress. */
void service_notify_watchdog(void);

/* The watchdog period systemd expects keep-alives within (WatchdogSec=),
 * in microseconds, or 0 when there is no watchdog. */
uint64_t service_watchdog_period_usec(void);

/* The listening socket passed by systemd (exactly one stream socket), made
 * non-blocking: its descriptor in *ret_fd, or -1 when none was passed.
 * Returns 0, or -EINVAL when several or a non-stream socket were passed.
 * Unsets LISTEN_FDS so that children do not inherit it. */
int service_take_listen_fd(int *ret_fd);

#endif

/* sd: effnetd's side of systemd (the only module that includes
 * sd-daemon.h): readiness and status notifications for Type=notify, the
 * service watchdog, and socket activation (LISTEN_FDS). Every call is a
 * no-op without systemd (no NOTIFY_SOCKET, no LISTEN_FDS), so the daemon
 * behaves the same everywhere else. */
#ifndef EFFNET_DAEMON_SD_H
#define EFFNET_DAEMON_SD_H

#include <stdint.h>

/* READY=1 with a STATUS= line. Call once the model is loaded and the
 * executors are warm, and again after a reload. */
void sd_send_ready(const char *status);

/* STATUS= only (what is served and at which rate). */
void sd_send_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* EXTEND_TIMEOUT_USEC=: the start (or reload) may take usec more from now,
 * sent while the weights download, so that TimeoutStartSec= counts from
 * the last progress rather than from the start. */
void sd_extend_timeout(uint64_t usec);
/* RELOADING=1 with MONOTONIC_USEC= (systemd's Type=notify-reload protocol). */
void sd_send_reloading(void);

/* STOPPING=1 with a STATUS= line. */
void sd_send_stopping(const char *status);

/* WATCHDOG=1: call only after checking that the workers make progress. */
void sd_send_watchdog(void);

/* The watchdog period systemd expects keep-alives within (WatchdogSec=),
 * in microseconds, or 0 when there is no watchdog. */
uint64_t sd_watchdog_period_usec(void);

/* The listening socket passed by systemd (exactly one stream socket), made
 * non-blocking: its descriptor in *ret_fd, or -1 when none was passed.
 * Returns 0, or -EINVAL when several or a non-stream socket were passed.
 * Unsets LISTEN_FDS so that children do not inherit it. */
int sd_take_listen_fd(int *ret_fd);

#endif

/* reload: one load of a model generation at a time on a thread of its own,
 * so that the main loop keeps answering signals and feeding the watchdog
 * while new executors warm up. The states, driven by the main thread:
 *
 *   idle --reload_start--> running --(the load returns)--> ready
 *   ready --reload_finish--> idle   (the result or the error handed over)
 *
 * What is loaded and how it is swapped in is the caller's: the loader is a
 * function of the caller's input, and its result an opaque pointer.
 *
 *   struct reload rl = RELOAD_INIT;
 *   if (reload_start(&rl, load_model, &settings) == 0)
 *           while (!reload_ready(&rl))
 *                   wait_for_signals();
 *   void *next;
 *   if (reload_finish(&rl, err, sizeof err, &next) == 0)
 *           swap_in(next);
 *
 * Not thread-safe: one thread (the main loop) calls every function.
 */
#ifndef EFFNET_DAEMON_RELOAD_H
#define EFFNET_DAEMON_RELOAD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Runs on the reload's thread: builds a result from input (read only), or
 * returns a negative errno code with a message in err. */
typedef int (*reload_load_fn)(const void *input, char *err, size_t err_len, void **ret_result);

struct reload {
        pthread_t thread;
        bool running;              /* started and not finished (main thread only) */
        atomic_bool done;          /* the loader returned (set by the thread) */
        reload_load_fn load;
        const void *input;         /* the caller's, read by the thread until reload_finish */
        int r;                     /* the loader's return value, once done */
        void *result;              /* the loader's result, once done with r == 0 */
        char err[512];
};

#define RELOAD_INIT { .running = false }

/* Starts load(input) on a new thread; input must stay valid until
 * reload_finish. -EBUSY while another load is running (nothing started),
 * -errno when the thread cannot be created. */
int reload_start(struct reload *rl, reload_load_fn load, const void *input);

/* Whether a load is started and not finished yet. */
bool reload_running(const struct reload *rl);

/* Whether a running load has returned, so that reload_finish will not
 * wait. */
bool reload_ready(const struct reload *rl);

/* Waits for the running load's thread (at once when reload_ready) and goes
 * back to idle. Returns the loader's code: 0 with its result in
 * *ret_result (now the caller's), or its error with its message in err.
 * -ENOENT when no load is running. */
int reload_finish(struct reload *rl, char *err, size_t err_len, void **ret_result);

#endif

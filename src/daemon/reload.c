/* reload: a model generation loaded on a thread of its own (reload.h). */
#include "reload.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void *reload_thread(void *arg)
{
        struct reload *rl = arg;
        void *result = NULL;

        rl->r = rl->load(rl->input, rl->err, sizeof rl->err, &result);
        rl->result = rl->r == 0 ? result : NULL;
        atomic_store(&rl->done, true);
        return NULL;
}

int reload_start(struct reload *rl, reload_load_fn load, const void *input)
{
        int r;

        if (rl->running)
                return -EBUSY;
        rl->load = load;
        rl->input = input;
        rl->r = 0;
        rl->result = NULL;
        rl->err[0] = '\0';
        atomic_store(&rl->done, false);
        if ((r = -pthread_create(&rl->thread, NULL, reload_thread, rl)) < 0)
                return r;
        rl->running = true;
        return 0;
}

bool reload_running(const struct reload *rl)
{
        return rl->running;
}

bool reload_ready(const struct reload *rl)
{
        return rl->running && atomic_load(&rl->done);
}

int reload_finish(struct reload *rl, char *err, size_t err_len, void **ret_result)
{
        if (!rl->running)
                return -ENOENT;
        pthread_join(rl->thread, NULL);
        rl->running = false;
        rl->input = NULL;
        if (rl->r < 0) {
                snprintf(err, err_len, "%s", rl->err);
                return rl->r;
        }
        *ret_result = rl->result;
        rl->result = NULL;
        return 0;
}

/* workpool: a bounded pool of worker threads that run jobs step by step. */
#include "workpool.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct wpool {
        pthread_mutex_t lock;           /* guards everything below but threads */
        pthread_cond_t work;            /* a job was queued, or stopping */
        struct wpool_job *head, *tail;    /* waiting jobs, FIFO */
        int queued, busy, queue;        /* queue: bound of queued + busy beyond size */
        int busy_large;                 /* running a large step */
        uint64_t jobs, rejected;
        bool stopping;
        int size;                       /* threads wanted; immutable once they start */
        int n_threads;                  /* started (wpool_new and wpool_free only) */
        pthread_t *threads;             /* [n_threads] */
};

/* Queues job at the tail. Under p->lock. */
static void queue_append(struct wpool *p, struct wpool_job *job)
{
        job->next = NULL;
        if (p->tail)
                p->tail->next = job;
        else
                p->head = job;
        p->tail = job;
        p->queued++;
}

/* The first waiting job this thread may run, unlinked; NULL if none: large
 * steps leave one thread to the small ones. Under p->lock. */
static struct wpool_job *take(struct wpool *p)
{
        int large_cap = p->size > 1 ? p->size - 1 : 1;
        struct wpool_job *prev = NULL;

        for (struct wpool_job *j = p->head; j; prev = j, j = j->next) {
                if (j->large && p->busy_large >= large_cap)
                        continue;
                if (prev)
                        prev->next = j->next;
                else
                        p->head = j->next;
                if (p->tail == j)
                        p->tail = prev;
                p->queued--;
                return j;
        }
        return NULL;
}

static void *pool_main(void *arg)
{
        struct wpool *p = arg;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                struct wpool_job *job;
                while (!(job = take(p)) && !(p->stopping && !p->head))
                        pthread_cond_wait(&p->work, &p->lock);
                if (!job)
                        break;  /* stopping and nothing left */
                bool large = job->large;
                p->busy++;
                p->busy_large += large;
                pthread_mutex_unlock(&p->lock);
                /* job may be gone once run returns WPOOL_DONE: read nothing after. */
                enum wpool_step step = job->run(job);
                pthread_mutex_lock(&p->lock);
                p->busy--;
                p->busy_large -= large;
                /* A large step's end may let a waiting large job run. */
                if (large)
                        pthread_cond_broadcast(&p->work);
                if (step == WPOOL_AGAIN) {
                        /* Admitted already: never refused, behind those waiting. */
                        queue_append(p, job);
                } else {
                        p->jobs++;
                }
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int wpool_new(const struct wpool_opts *opts, struct wpool **ret_pool)
{
        struct wpool *p;
        int n, r;

        if (!opts || opts->threads < 0 || opts->threads > WPOOL_MAX_THREADS || opts->queue < 1)
                return -EINVAL;
        n = opts->threads;
        if (n == 0) {
                n = cpu_usable_count();
                if (n > WPOOL_DEFAULT_MAX_THREADS)
                        n = WPOOL_DEFAULT_MAX_THREADS;
                if (n < 1)
                        n = 1;
        }
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->threads = calloc((size_t)n, sizeof *p->threads);
        if (!p->threads) {
                free(p);
                return -ENOMEM;
        }
        p->queue = opts->queue;
        p->size = n;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->work, NULL);
        for (; p->n_threads < n; p->n_threads++)
                if ((r = -pthread_create(&p->threads[p->n_threads], NULL, pool_main, p)) < 0) {
                        wpool_free(p);
                        return r;
                }
        *ret_pool = p;
        return 0;
}

int wpool_submit(struct wpool *p, struct wpool_job *job)
{
        int r = 0;

        pthread_mutex_lock(&p->lock);
        if (p->stopping) {
                r = -ESHUTDOWN;
        } else if (p->queued + p->busy >= p->size + p->queue) {
                p->rejected++;
                r = -EAGAIN;
        } else {
                queue_append(p, job);
                pthread_cond_signal(&p->work);
        }
        pthread_mutex_unlock(&p->lock);
        return r;
}

void wpool_stats_snapshot(struct wpool *p, struct wpool_stats *ret_stats)
{
        pthread_mutex_lock(&p->lock);
        *ret_stats = (struct wpool_stats){ .threads = p->size, .queue_capacity = p->queue,
                                         .queued = p->queued, .busy = p->busy, .jobs = p->jobs,
                                         .rejected = p->rejected };
        pthread_mutex_unlock(&p->lock);
}

struct wpool *wpool_free(struct wpool *p)
{
        if (!p)
                return NULL;
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->n_threads; i++)
                pthread_join(p->threads[i], NULL);
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->lock);
        free(p->threads);
        free(p);
        return NULL;
}

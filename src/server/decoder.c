/* decoder: a bounded pool of image decoding threads. */
#include "decoder.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct dec_pool {
        pthread_mutex_t lock;           /* guards everything below but threads */
        pthread_cond_t work;            /* a job was queued, or stopping */
        struct dec_job *head, *tail;    /* waiting jobs, FIFO */
        int queued, busy, queue;        /* queue: bound of queued + busy beyond size */
        int busy_large;                 /* running a large step */
        uint64_t jobs, rejected;
        bool stopping;
        int size;                       /* threads wanted; immutable once they start */
        int n_threads;                  /* started (dec_new and dec_free only) */
        pthread_t *threads;             /* [n_threads] */
};

/* Queues job at the tail. Under p->lock. */
static void queue_append(struct dec_pool *p, struct dec_job *job)
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
static struct dec_job *take(struct dec_pool *p)
{
        int large_cap = p->size > 1 ? p->size - 1 : 1;
        struct dec_job *prev = NULL;

        for (struct dec_job *j = p->head; j; prev = j, j = j->next) {
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

static void *dec_main(void *arg)
{
        struct dec_pool *p = arg;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                struct dec_job *job;
                while (!(job = take(p)) && !(p->stopping && !p->head))
                        pthread_cond_wait(&p->work, &p->lock);
                if (!job)
                        break;  /* stopping and nothing left */
                bool large = job->large;
                p->busy++;
                p->busy_large += large;
                pthread_mutex_unlock(&p->lock);
                /* job may be gone once run returns DEC_DONE: read nothing after. */
                enum dec_step step = job->run(job);
                pthread_mutex_lock(&p->lock);
                p->busy--;
                p->busy_large -= large;
                /* A large step's end may let a waiting large job run. */
                if (large)
                        pthread_cond_broadcast(&p->work);
                if (step == DEC_AGAIN) {
                        /* Admitted already: never refused, behind those waiting. */
                        queue_append(p, job);
                } else {
                        p->jobs++;
                }
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

int dec_new(const struct dec_opts *opts, struct dec_pool **ret_pool)
{
        struct dec_pool *p;
        int n, r;

        if (!opts || opts->threads < 0 || opts->threads > DEC_MAX_THREADS || opts->queue < 1)
                return -EINVAL;
        n = opts->threads;
        if (n == 0) {
                n = cpu_usable_count();
                if (n > DEC_DEFAULT_MAX_THREADS)
                        n = DEC_DEFAULT_MAX_THREADS;
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
                if ((r = -pthread_create(&p->threads[p->n_threads], NULL, dec_main, p)) < 0) {
                        dec_free(p);
                        return r;
                }
        *ret_pool = p;
        return 0;
}

int dec_submit(struct dec_pool *p, struct dec_job *job)
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

void dec_stats_snapshot(struct dec_pool *p, struct dec_stats *ret_stats)
{
        pthread_mutex_lock(&p->lock);
        *ret_stats = (struct dec_stats){ .threads = p->size, .queue_capacity = p->queue,
                                         .queued = p->queued, .busy = p->busy, .jobs = p->jobs,
                                         .rejected = p->rejected };
        pthread_mutex_unlock(&p->lock);
}

struct dec_pool *dec_free(struct dec_pool *p)
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

/* cpushare: one CPU budget for every model of a repository. Each model
 * holds workers x threads CPUs; together they may not exceed the usable
 * CPUs. A model whose settings name its threads (its config.conf, or the
 * daemon's threads setting) holds what it asked for, or is refused with the
 * reason; the models that name none share what is left evenly. Pure: no
 * I/O, no clock, no global state.
 *
 *   struct cpushare_model m[2] = { { .name = "a", .workers = 1 },
 *                                  { .name = "b", .workers = 1, .threads = 2 } };
 *   int held = cpushare_split(m, 2, cpu_usable_count());
 *   // m[i].ret_threads: 0 = refused (m[i].ret_reason says why);
 *   // held > CPUs: more models than CPUs left (each holds at least one)
 */
#ifndef EFFNET_DAEMON_CPUSHARE_H
#define EFFNET_DAEMON_CPUSHARE_H

#include <stdbool.h>

struct cpushare_model {
        const char *name;        /* borrowed, for the reasons */
        int workers;             /* >= 1 */
        int threads;             /* threads per worker its settings name; 0: an even share of what is left */
        bool serving;            /* serving already: keeps its CPUs before a model that does not serve yet */
        int ret_threads;         /* threads per worker it gets; 0: refused */
        char ret_reason[320];    /* why it was refused, or "" */
};

/* Splits cpus (>= 1) between the n models of m, in this order: the models
 * that name their threads and serve, then the others that name their
 * threads (each leaving one CPU per model that names none), then the rest
 * evenly over the models that name none (at least one thread each, however
 * few CPUs are left). Writes every ret_threads and ret_reason; returns the
 * CPUs held: workers x ret_threads summed over the models not refused,
 * above cpus only when more models name no threads than CPUs are left. */
int cpushare_split(struct cpushare_model *m, int n, int cpus);

#endif

/* cpushare: the repository's CPU budget, split between its models. */
#include "cpushare.h"

#include <stdio.h>

int cpushare_split(struct cpushare_model *m, int n, int cpus)
{
        int held = 0, silent = 0;

        for (int i = 0; i < n; i++) {
                m[i].ret_threads = 0;
                m[i].ret_reason[0] = '\0';
                if (m[i].threads <= 0)
                        silent++;
        }
        /* The models that name their threads: a serving one first, so that
         * a model added to the repository never takes a serving model's
         * CPUs; a new one leaves a CPU to each model that names none. */
        for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < n; i++) {
                        struct cpushare_model *x = &m[i];
                        if (x->threads <= 0 || x->serving != (pass == 0))
                                continue;
                        long long need = (long long)x->workers * x->threads;
                        int left = cpus - held - (pass == 0 ? 0 : silent);
                        if (left < 0)
                                left = 0;
                        if (need > left) {
                                snprintf(x->ret_reason, sizeof x->ret_reason,
                                         "its %d worker(s) x %d thread(s) need %lld CPUs, but only %d of the %d "
                                         "usable CPUs are left for it (every model's workers x threads together "
                                         "may not exceed them): lower its threads or workers in its config.conf, "
                                         "or leave threads unset for an even share",
                                         x->workers, x->threads, need, left, cpus);
                                continue;
                        }
                        x->ret_threads = x->threads;
                        held += (int)need;
                }
        /* The rest, evenly (the last models take what the division leaves). */
        int rest = cpus - held;
        for (int i = 0, k = silent; i < n; i++) {
                struct cpushare_model *x = &m[i];
                if (x->threads > 0)
                        continue;
                int share = rest > 0 ? rest / k : 0;
                int t = share / x->workers;
                x->ret_threads = t < 1 ? 1 : t;
                rest -= x->workers * x->ret_threads;
                held += x->workers * x->ret_threads;
                k--;
        }
        return held;
}

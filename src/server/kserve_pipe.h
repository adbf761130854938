/* kserve_pipe: how the gRPC service's infer requests reach the daemon's
 * decoding pool and batcher (kserve_backend.submit, server/kserve.h): the
 * BYTES images decoded on the HTTP server's pool of decoding threads, image
 * by image as REST's are, within the same limits (pixels per request,
 * decode limits, deadline); then one batcher job per image, so that gRPC
 * and REST requests share forward passes. An adapter over the existing
 * pieces, kept apart so that a request pipeline shared by every transport
 * can take its place.
 *
 *   struct kpipe_opts o = { .dec = pool, .img = img_opts, .max_request_pixels = px, .budget = b };
 *   kpipe_new(&o, &p);
 *   backend.submit = kpipe_submit; backend.userdata = ... (p reached from it)
 */
#ifndef EFFNET_SERVER_KSERVE_PIPE_H
#define EFFNET_SERVER_KSERVE_PIPE_H

#include <stdatomic.h>
#include <stdint.h>

#include "budget.h"
#include "decoder.h"
#include "image.h"
#include "kserve.h"

struct kpipe_opts {
        struct dec_pool *dec;        /* borrowed */
        struct img_opts img;
        int64_t max_request_pixels;
        struct budget *budget;       /* borrowed */
};

struct kpipe {
        struct kpipe_opts opts;
        atomic_bool stopping;        /* kpipe_stop: nothing new is submitted */
};

int kpipe_new(const struct kpipe_opts *opts, struct kpipe **ret);
struct kpipe *kpipe_free(struct kpipe *p);
/* From now on submissions fail with -ESHUTDOWN. */
void kpipe_stop(struct kpipe *p);

/* kserve_backend.submit's work: 0 and kserve_infer_done(job, ...) later,
 * exactly once, from a decoding or batcher thread; or < 0 and never. */
int kpipe_submit(struct kpipe *p, struct kserve_infer *job);

#endif

/* Fuzz target for the safetensors header parser: any input must parse or fail cleanly, never read outside it. */
#include "safetensors.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char err[256];
        struct st_file *f = NULL;
        float tmp[64];
        int r;

        memset(err, 'x', sizeof err);
        r = st_parse(data, size, err, sizeof err, &f);
        if (r < 0) {
                /* a failure always explains itself in a terminated message */
                if (f || !memchr(err, '\0', sizeof err) || !err[0])
                        abort();
                if (r != -EBADMSG && r != -E2BIG && r != -ENOMEM)
                        abort();
                return 0;
        }

        for (size_t i = 0; i < st_count(f); i++) {
                const struct st_tensor *t = st_at(f, i);
                const uint8_t *p = t->data;

                if (st_find(f, t->name) != t)
                        abort();
                if (p < data || p > data + size || t->nbytes > (size_t)(data + size - p))
                        abort();
                /* touch the first and last bytes so the sanitizer sees any escape */
                if (t->dtype != ST_OTHER && t->numel > 0) {
                        size_t esz = t->dtype == ST_F32 ? 4 : 2, n = (size_t)t->numel;

                        if (n * esz != t->nbytes)
                                abort();
                        st_to_f32(t->dtype, p, n < 64 ? n : 64, tmp);
                        st_to_f32(t->dtype, p + t->nbytes - esz, 1, tmp);
                }
        }
        if (st_at(f, st_count(f)) != NULL)
                abort();
        st_free(f);
        return 0;
}

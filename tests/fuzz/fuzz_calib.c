/* Fuzz target for int8 calibration files: the input is a file's text. Any
 * input must parse or fail with -EBADMSG or -E2BIG and a message; a parsed
 * one must format and parse again to the same values. */
#include "calib.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct calib *c = NULL, *again = NULL;
        char err[512], *text = NULL;

        memset(err, 'x', sizeof err);
        int r = calib_parse((const char *)data, size, err, sizeof err, &c);
        if (r < 0) {
                if ((r != -EBADMSG && r != -E2BIG && r != -ENOMEM) || !memchr(err, '\0', sizeof err) || !err[0])
                        abort();
                return 0;
        }
        if (calib_format(c, &text) < 0 || calib_parse(text, strlen(text), err, sizeof err, &again) < 0)
                abort();
        if (again->n != c->n || strcmp(again->sha256, c->sha256) != 0 || again->size != c->size)
                abort();
        for (int i = 0; i < c->n; i++)
                if (strcmp(again->v[i].name, c->v[i].name) != 0 || again->v[i].scale != c->v[i].scale ||
                    again->v[i].int8 != c->v[i].int8)
                        abort();
        free(text);
        calib_free(again);
        calib_free(c);
        return 0;
}

/* Fuzz target for the effnetd config file parser: the input is a config
 * file. Any input must load or fail with -EINVAL and a message; a loaded
 * configuration must print and free cleanly. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char path[] = "/tmp/effnet-fuzz-conf-XXXXXX", err[2048];
        char *argv[] = { "effnetd", "--config", path, NULL };
        struct conf c = { 0 };
        int fd = mkstemp(path);

        if (fd < 0)
                return 0;
        if (write(fd, data, size) != (ssize_t)size) {
                close(fd);
                unlink(path);
                return 0;
        }
        close(fd);
        memset(err, 'x', sizeof err);
        int r = conf_load(3, argv, &c, err, sizeof err);
        unlink(path);
        if (r < 0) {
                if (r != -EINVAL || !memchr(err, '\0', sizeof err) || !err[0])
                        abort();
                return 0;
        }
        if (!c.weights)
                abort();
        FILE *f = fopen("/dev/null", "w");
        if (f) {
                conf_print(f, &c);
                fclose(f);
        }
        conf_free(&c);
        return 0;
}

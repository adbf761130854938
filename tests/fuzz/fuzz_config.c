/* Fuzz target for the INI reader of effnetd's config file and of a model
 * repository's config.conf: the input is both. Any input must load or fail
 * with -EINVAL and a message; a loaded configuration must print and free
 * cleanly; a config.conf must scan, the model listed with or without an
 * error. */
#include "config.h"
#include "repository.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as DIR/m/config.conf of a repository with no version. */
static void scan_as_model_conf(const uint8_t *data, size_t size)
{
        char dir[] = "/tmp/effnet-fuzz-repo-XXXXXX", mdir[64], path[96], err[512];
        struct repo_scan *sc = NULL;

        if (!mkdtemp(dir))
                return;
        snprintf(mdir, sizeof mdir, "%s/m", dir);
        snprintf(path, sizeof path, "%s/config.conf", mdir);
        FILE *f = mkdir(mdir, 0700) == 0 ? fopen(path, "w") : NULL;
        if (f) {
                fwrite(data, 1, size, f);
                fclose(f);
                if (repo_scan(dir, NULL, NULL, err, sizeof err, &sc) < 0 || sc->n != 1 || !sc->models[0].error[0])
                        abort();
                sc = repo_scan_free(sc);
        }
        unlink(path);
        rmdir(mdir);
        rmdir(dir);
}

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
        scan_as_model_conf(data, size);
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

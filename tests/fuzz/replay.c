/* Runs a fuzz target over saved inputs when it is not linked with libFuzzer, so every corpus is also a test. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Each input gets a buffer of exactly its size, so that a sanitizer build
 * catches a read one byte past the end, as libFuzzer would. */
static int run_file(const char *path)
{
        FILE *fp = fopen(path, "rb");
        uint8_t *buf = NULL;
        long len;
        int r = -1;

        if (!fp) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
                return -1;
        }
        if (fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
                fprintf(stderr, "replay: %s: cannot size\n", path);
                goto out;
        }
        buf = malloc(len > 0 ? (size_t)len : 1);
        if (!buf || fread(buf, 1, (size_t)len, fp) != (size_t)len) {
                fprintf(stderr, "replay: %s: cannot read\n", path);
                goto out;
        }
        LLVMFuzzerTestOneInput(len > 0 ? buf : NULL, (size_t)len);
        r = 0;
out:
        free(buf);
        fclose(fp);
        return r;
}

static int is_dir(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Runs every regular file of dir, in name order so failures reproduce. */
static int run_dir(const char *dir, int *count)
{
        struct dirent **names = NULL;
        int n = scandir(dir, &names, NULL, alphasort), r = 0;

        if (n < 0) {
                fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
                return -1;
        }
        for (int i = 0; i < n; i++) {
                char path[4096];

                if (names[i]->d_name[0] != '.' &&
                    snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name) < (int)sizeof path &&
                    !is_dir(path)) {
                        if (run_file(path) < 0)
                                r = -1;
                        else
                                (*count)++;
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char **argv)
{
        int count = 0, r = 0;

        if (argc < 2) {
                fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
                return 2;
        }
        for (int i = 1; i < argc; i++) {
                if (argv[i][0] == '-')
                        continue; /* libFuzzer flags, so one command line suits both builds */
                if (is_dir(argv[i]) ? run_dir(argv[i], &count) < 0 : run_file(argv[i]) < 0)
                        r = 1;
                else if (!is_dir(argv[i]))
                        count++;
        }
        fprintf(stderr, "replay: %d inputs\n", count);
        if (count == 0)
                r = 1;
        return r;
}

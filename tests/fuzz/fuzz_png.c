/* Fuzz target for PNG decoding and preprocessing: any input must decode or
 * fail with a known code and a message, never crash, leak or hang. */
#include "fuzz_image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct img_rgb *img = NULL;
        struct img_info info;
        char err[256];
        uint8_t sel = size ? data[size - 1] : 0;
        int r;

        /* Probing sniffs the format: anything not an image is -ENOTSUP. */
        memset(err, 'x', sizeof err);
        r = img_probe(data, size, &fuzz_limits, err, sizeof err, &info);
        if (r < 0)
                fuzz_check_failure(r, err, sizeof err, -ENOTSUP);

        memset(err, 'x', sizeof err);
        r = img_decode_png(data, size, &fuzz_limits, err, sizeof err, &img);
        if (r < 0) {
                fuzz_check_failure(r, err, sizeof err, 0);
                return 0;
        }
        fuzz_use(img, sel);
        img_rgb_free(img);
        return 0;
}

/* image internals shared by the decoders and the resampler; not installed. */
#ifndef EFFNET_IMAGE_INTERNAL_H
#define EFFNET_IMAGE_INTERNAL_H

#include <stddef.h>

#include "image.h"

/* -E2BIG with a message if width x height breaks a limit, -EBADMSG if a side
 * is < 1, else 0. what names the format in the message. */
int img_check_dims(const struct img_limits *lim, const char *what, int width,
                   int height, char *err, size_t err_len);

/* A width x height image with uninitialized pixels (channels bytes per
 * pixel, 3 or 4, so decoders can convert CMYK in place), or NULL. */
struct img_rgb *img_rgb_alloc(int width, int height, int channels);

/* Reads a PNG's IHDR size without libpng. -EBADMSG if malformed. */
int img_png_header(const void *data, size_t len, int *ret_width, int *ret_height);

/* The JPEG size from its header (TurboJPEG). -EBADMSG if malformed. */
int img_jpeg_header(const void *data, size_t len, char *err, size_t err_len,
                    int *ret_width, int *ret_height);

/* JPEG decoding passes since start (any thread): the tests check that a
 * stream is decoded once. */
unsigned long long img_jpeg_decode_passes(void);

#endif

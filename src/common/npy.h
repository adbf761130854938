/* npy: read and write NumPy .npy files of float32 (little-endian, C order).
 *
 * Usage:
 *   float *x; int64_t shape[8]; int ndim;
 *   if (npy_read_f32("in.npy", 8, err, sizeof err, &x, &ndim, shape) == 0) { ...; free(x); }
 *   npy_write_f32("out.npy", y, 2, (int64_t[]){n, classes}, err, sizeof err);
 */
#ifndef EFFNET_NPY_H
#define EFFNET_NPY_H

#include <stddef.h>
#include <stdint.h>

#define NPY_MAX_BYTES ((size_t)8 << 30)

/* Reads a '<f4' C-order array. On success *ret_data is malloc'ed (caller
 * frees), *ret_ndim <= max_dims and ret_shape filled. */
int npy_read_f32(const char *path, int max_dims, char *err, size_t err_len,
                 float **ret_data, int *ret_ndim, int64_t *ret_shape);
int npy_write_f32(const char *path, const float *data, int ndim,
                  const int64_t *shape, char *err, size_t err_len);

#endif

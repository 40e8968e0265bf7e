/* Register tiles for the direct convolution's weight gradient (conv_direct.pyx's
 * conv2d_grad_weight_tiles), on the forward's phase planes (conv_direct_rows.h).
 *
 * grad_weight is a product reduced over pixels: gw[k, t] = sum_p go[k, p] * x_t[p],
 * x_t[p] the input under pixel p at tap t. A tile keeps FC_GV vectors of output
 * channels x FC_GT taps of sums in registers over a band's pixels: each pixel loads
 * FC_GV vectors of grad_output (transposed channel-fastest) and broadcasts FC_GT
 * input values, FC_GV * FC_GT multiply-adds; no lane of a vector is spent past a
 * row's end, and no sum is reduced across lanes. Every function is written once, in
 * conv_direct_grad_impl.h, included below for float (_f) and double (_d).
 */
#ifndef FASTCONV_CONV_DIRECT_GRAD_H
#define FASTCONV_CONV_DIRECT_GRAD_H

#include "conv_direct_rows.h"

#define FC_GV 2 /* vectors of output channels per grad_weight tile */
#if defined(__AVX512F__)
#  define FC_GT 12 /* taps per grad_weight tile: FC_GV x FC_GT accumulators (32 registers) */
#else
#  define FC_GT 6 /* (16 registers) */
#endif
#if FC_GT > 12
#  error "fc_grad_w_tiles' switch covers tiles of 1..12 taps"
#endif

#define T float
#define SUF f
#define FC_DOUBLE 0
#include "conv_direct_grad_impl.h"
#undef T
#undef SUF
#undef FC_DOUBLE

#define T double
#define SUF d
#define FC_DOUBLE 1
#include "conv_direct_grad_impl.h"
#undef T
#undef SUF
#undef FC_DOUBLE

#endif

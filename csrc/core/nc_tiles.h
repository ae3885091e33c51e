// What one GPU thread does in the loops over a dense feature map [N, C, HW]
// (csrc/cuda/nc_loops.cuh), written as host/device functions of the thread's coordinates: the
// C++ unit tests run every thread of a grid on the host and check that each element is visited
// once, with its channel row, and that the partial sums add up. Torch-free, like all of core/.
//
// Work is done in packs of V consecutive elements of a row (V * sizeof(scalar) == 16 bytes on
// the vector path, V == 1 otherwise), so a pack never straddles two rows: the loops launch
// V > 1 only when V divides the row length (HW for NCHW rows, C for NHWC rows) and every
// pointer is 16-byte aligned (vector_width below).
//
// Element functors see a whole pack:
//   map:    fn.template apply<V>(i, nc, step)      elements i .. i+V-1, element k in channel
//                                                  row nc + k * step (step 0: NCHW, 1: NHWC)
//   reduce: fn.template reduce<V, STEP>(i, nc, s0, s1)
//                                                  the same elements (step STEP); element k
//                                                  adds to s0[k * STEP] and s1[k * STEP]
#pragma once

#include <cstdint>

#include "common.h"

namespace cprl {

// V consecutive elements aligned to their size: one 16-byte load or store when
// V * sizeof(T) == 16.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <int V, typename T>
CPRL_HD Pack<T, V> load_pack(const T* p, int64_t i) {
  return *reinterpret_cast<const Pack<T, V>*>(p + i);
}

template <int V, typename T>
CPRL_HD void store_pack(T* p, int64_t i, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p + i) = v;
}

// The pack width of a loop: max_v (16 bytes of the element type) when it divides the row
// length and every pointer the loop touches is 16-byte aligned, else 1.
inline int vector_width(int64_t row_length, int max_v, bool all_aligned16) {
  return all_aligned16 && row_length % max_v == 0 ? max_v : 1;
}

// A thread's place in its grid (CUDA's blockIdx, threadIdx, gridDim, blockDim; x and y).
struct ThreadCoords {
  int64_t bx, by;  // block
  int64_t tx, ty;  // thread in the block
  int64_t gx, gy;  // blocks in the grid
  int64_t dx, dy;  // threads in a block
};

// Rows of the dense map seen as [rows, row_length] with row_length contiguous: NCHW rows are
// the N*C channel rows (of HW pixels), NHWC rows the N*HW pixel rows (of C channels).
CPRL_HD int64_t map_rows(const NCHWSizes& sz) {
  return sz.layout == Layout::kNCHW ? sz.N * sz.C : sz.N * sz.HW;
}
CPRL_HD int64_t row_length(const NCHWSizes& sz) {
  return sz.layout == Layout::kNCHW ? sz.HW : sz.C;
}

// nc_map's launch: a block is dx threads along a row (the row's packs rounded up to a power of
// two, 32 to `threads`) by threads / dx rows; enough blocks to fill the GPU (32 per SM, sms
// multiprocessors), split between the two grid dimensions (gy at most 65535).
struct MapGeometry {
  int64_t dx, dy, gx, gy;
};
inline MapGeometry map_geometry(const NCHWSizes& sz, int V, int64_t sms, int64_t threads = 256) {
  const int64_t rows = map_rows(sz);
  const int64_t packs = row_length(sz) / V;
  int64_t dx = 32;
  while (dx < packs && dx < threads) dx *= 2;
  const int64_t dy = threads / dx;
  int64_t gy = (rows + dy - 1) / dy;
  gy = gy < 65535 ? gy : 65535;
  const int64_t max_gx = (packs + dx - 1) / dx;
  int64_t gx = sms * 32 / gy;
  gx = gx < 1 ? 1 : (gx > max_gx ? max_gx : gx);
  return {dx, dy, gx, gy};
}

// nc_reduce over NHWC pixels: the number of pixel splits (chunks of about 256 pixels, 1 to 64).
inline int64_t nhwc_splits(int64_t HW) {
  const int64_t s = (HW + 255) / 256;
  return s < 1 ? 1 : (s > 64 ? 64 : s);
}

// The order in which nc_map's blocks take the map's rows. A GPU starts a grid's blocks in
// order, so with kLastToFirst the first blocks take the last rows: a pass over a map that a
// reduction has just read first to last (nc_reduce walks the map in memory order) starts on
// the rows that reduction left in the L2 cache, before the pass's own traffic evicts them.
enum class RowOrder { kFirstToLast, kLastToFirst };

// nc_map: thread (tx, ty) of block (bx, by) takes the rows by*dy + ty, stepping gy*dy (counted
// from the last row with kLastToFirst), and in each the packs bx*dx + tx, stepping gx*dx. One
// division per row (NHWC), none per element.
template <int V, typename Fn>
CPRL_HD void map_thread(const NCHWSizes& sz, const ThreadCoords& t, const Fn& fn,
                        RowOrder order = RowOrder::kFirstToLast) {
  const bool nchw = sz.layout == Layout::kNCHW;
  const int64_t rows = map_rows(sz);
  const int64_t len = row_length(sz);
  const int64_t packs = len / V;
  for (int64_t r = t.by * t.dy + t.ty; r < rows; r += t.gy * t.dy) {
    const int64_t row = order == RowOrder::kFirstToLast ? r : rows - 1 - r;
    const int64_t nc0 = nchw ? row : (row / sz.HW) * sz.C;
    for (int64_t k = t.bx * t.dx + t.tx; k < packs; k += t.gx * t.dx)
      fn.template apply<V>(row * len + k * V, nchw ? nc0 : nc0 + k * V, nchw ? 0 : 1);
  }
}

// nc_reduce over NCHW rows: the lanes that share one channel row, 8, 16 or 32 (a warp holds
// 32 / lanes rows): about 4 packs a lane or more, so a short row (7 x 7 pixels: 49) does not
// leave most of a warp idle and pay a 32-lane shuffle tree for 49 values. A function of the
// shape alone, so the order of the sums is too (deterministic).
inline int nchw_row_lanes(int64_t packs) { return packs <= 64 ? 8 : packs <= 128 ? 16 : 32; }

// The channel row and lane of thread `thread` of block `block` in the NCHW reduce: blocks of
// `warps` warps, each warp 32 / lanes rows of `lanes` lanes, rows in order.
struct RowLane {
  int64_t row;
  int64_t lane;
};
CPRL_HD RowLane nchw_row_lane(int64_t block, int64_t thread, int64_t warps, int64_t lanes) {
  const int64_t rows_per_warp = 32 / lanes;
  const int64_t warp = block * warps + thread / 32;
  return {warp * rows_per_warp + (thread % 32) / lanes, thread % lanes};
}

// nc_reduce over NCHW rows: lane `lane` of the `lanes` that share channel row `row` adds the
// row's packs lane, lane + lanes, ... to s0 and s1; the lanes' sums add up to the row's.
template <int V, typename acc_t, typename Fn>
CPRL_HD void reduce_row_lane(const NCHWSizes& sz, int64_t row, int64_t lane, int64_t lanes,
                             const Fn& fn, acc_t& s0, acc_t& s1) {
  const int64_t packs = sz.HW / V;
  for (int64_t k = lane; k < packs; k += lanes)
    fn.template reduce<V, 0>(row * sz.HW + k * V, row, &s0, &s1);
}

// The pixels [begin, end) of split s of `splits` equal chunks of HW (the last may be short or
// empty).
struct PixelRange {
  int64_t begin, end;
};
CPRL_HD PixelRange split_pixels(int64_t HW, int64_t splits, int64_t s) {
  const int64_t chunk = (HW + splits - 1) / splits;
  const int64_t begin = s * chunk < HW ? s * chunk : HW;
  const int64_t end = begin + chunk < HW ? begin + chunk : HW;
  return {begin, end};
}

// Where the partial sum of channel c of sample n over pixel split s goes: [N, splits, C].
CPRL_HD int64_t partial_index(int64_t n, int64_t s, int64_t splits, int64_t C, int64_t c) {
  return (n * splits + s) * C + c;
}

// The sum of channel c of sample n from the partial sums [N, splits, C], added in split order
// (a fixed order: deterministic). splits == 1: the sums themselves.
template <typename T>
CPRL_HD T split_sum(const T* part, int64_t n, int64_t splits, int64_t C, int64_t c) {
  T acc = part[partial_index(n, 0, splits, C, c)];
  for (int64_t s = 1; s < splits; ++s) acc += part[partial_index(n, s, splits, C, c)];
  return acc;
}

// nc_reduce over NHWC pixels: the thread owning channels c0 .. c0+V-1 of sample n adds pixels
// first, first + stride, ... of `pixels` to s0[k] and s1[k] (channel c0 + k).
template <int V, typename acc_t, typename Fn>
CPRL_HD void reduce_pixels_thread(const NCHWSizes& sz, int64_t n, int64_t c0,
                                  const PixelRange& pixels, int64_t first, int64_t stride,
                                  const Fn& fn, acc_t* s0, acc_t* s1) {
  for (int64_t p = pixels.begin + first; p < pixels.end; p += stride)
    fn.template reduce<V, 1>((n * sz.HW + p) * sz.C + c0, n * sz.C + c0, s0, s1);
}

}  // namespace cprl

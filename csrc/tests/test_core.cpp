// Unit tests of the torch-independent kernel core (csrc/core), built by CMakeLists.txt and run
// by ctest, optionally under AddressSanitizer and UBSan (-DCPRL_SANITIZE=ON).
// Usage: cprl_core_tests <test name> ; with no argument, runs every test.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/attack_step.h"
#include "core/common.h"
#include "core/intervene.h"
#include "core/nc_tiles.h"
#include "core/rank_mask.h"
#include "core/rank_sort.h"

namespace {

int g_failures = 0;

#define EXPECT(cond)                                                        \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "%s:%d: expectation failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                         \
    }                                                                       \
  } while (0)

#define EXPECT_NEAR(a, b, tol)                                                              \
  do {                                                                                      \
    const double _a = (a), _b = (b);                                                        \
    if (!(std::fabs(_a - _b) <= (tol))) {                                                   \
      std::fprintf(stderr, "%s:%d: %s = %.17g, %s = %.17g, |diff| > %g\n", __FILE__, __LINE__, \
                   #a, _a, #b, _b, double(tol));                                           \
      ++g_failures;                                                                         \
    }                                                                                       \
  } while (0)

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// The sorting rank (CPU) and the counting rank (GPU) agree, ties, signed zeros and NaN
// (any payload) included, in both key widths, at lengths where a radix pass has one digit for
// every channel (skipped) and where it has many.
template <typename T>
void check_hard_rank_sort_equals_count(std::mt19937& rng, int64_t C, int spread) {
  std::vector<T> s(C);
  const T nan_payload = std::numeric_limits<T>::quiet_NaN();
  for (auto& v : s) {
    const int kind = rng() % 12;
    v = kind == 0   ? T(kNaN)
        : kind == 1 ? -nan_payload
        : kind == 2 ? T(kInf)
        : kind == 3 ? T(-kInf)
        : kind == 4 ? T(-0.0)
        : kind == 5 ? T(0.0)
                    : T(int64_t(rng() % (2 * spread + 1)) - spread) / T(7);
  }
  std::vector<typename cprl::RankKeyBits<T>::type> keys(2 * C);
  std::vector<uint32_t> idx(2 * C);
  std::vector<T> rank(C);
  cprl::hard_ranks_sorted(s.data(), C, keys.data(), idx.data(), rank.data());
  std::vector<bool> seen(C, false);
  for (int64_t c = 0; c < C; ++c) {
    EXPECT(rank[c] == T(cprl::hard_rank_count(s.data(), C, c)));
    const auto r = static_cast<int64_t>(rank[c]);
    EXPECT(r >= 0 && r < C && !seen[r]);  // a permutation of 0..C-1
    if (r >= 0 && r < C) seen[r] = true;
  }
}

void test_hard_rank_sort_equals_count() {
  std::mt19937 rng(123);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t C = 1 + rng() % 70;
    check_hard_rank_sort_equals_count<double>(rng, C, 3);
    check_hard_rank_sort_equals_count<float>(rng, C, 3);
  }
  for (const int64_t C : {255, 256, 257, 1000, 2048, 3001}) {
    check_hard_rank_sort_equals_count<double>(rng, C, 1 << 20);
    check_hard_rank_sort_equals_count<float>(rng, C, 1 << 20);
    check_hard_rank_sort_equals_count<float>(rng, C, 2);
  }
}

// The GPU's bitonic sort of rank keys (core/rank_sort.h), stage by stage on the host, gives
// hard_rank_count's ranks: ties, NaN, +-0 and +-inf included, float and double scores.
template <typename T>
void check_bitonic_ranks(const std::vector<T>& s) {
  const int C = int(s.size());
  const int P = cprl::sort_length(C);
  EXPECT(P >= C && P < 2 * C + 1 && (P & (P - 1)) == 0);
  std::vector<cprl::RankKey<T>> keys(P, cprl::RankKey<T>::last());
  for (int c = 0; c < C; ++c) keys[c] = cprl::rank_key(s[c], c);
  for (int k = 2; k <= P; k *= 2)
    for (int j = k / 2; j > 0; j /= 2)
      for (int t = 0; t < P / 2; ++t) cprl::bitonic_exchange(keys.data(), k, j, t);
  for (int pos = 0; pos < P; ++pos) {
    if (pos >= C) {  // the padding sorts last
      EXPECT(keys[pos].idx == ~uint32_t(0));
      continue;
    }
    const uint32_t c = keys[pos].idx;
    EXPECT(c < uint32_t(C));
    if (c < uint32_t(C)) EXPECT(pos == cprl::hard_rank_count(s.data(), C, int(c)));
  }
  // The CUDA radix path's contract (rank_mask_cuda.cu, radix_mask_kernel): a stable sort of
  // the score bits alone, the channels entering in index order, padding past C as the largest
  // bits, puts every channel at its rank (ties, NaN and +-0 included) and the padding last.
  using Bits = typename cprl::RankKeyBits<T>::type;
  std::vector<uint32_t> order(P);
  std::vector<Bits> bits(P, ~Bits(0));
  for (int i = 0; i < P; ++i) order[i] = uint32_t(i);
  for (int c = 0; c < C; ++c) bits[c] = cprl::ordered_bits(s[c]);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return bits[a] < bits[b]; });
  for (int pos = 0; pos < P; ++pos) {
    const uint32_t c = order[pos];
    EXPECT((pos < C) == (c < uint32_t(C)));
    if (c < uint32_t(C)) EXPECT(pos == cprl::hard_rank_count(s.data(), C, int(c)));
  }
}

void test_hard_rank_bitonic_sort() {
  std::mt19937 rng(321);
  for (int trial = 0; trial < 300; ++trial) {
    const int C = trial < 40 ? 1 + trial : 1 + int(rng() % 600);
    std::vector<double> sd(C);
    std::vector<float> sf(C);
    for (int c = 0; c < C; ++c) {
      const int kind = int(rng() % 12);
      const double v = kind == 0 ? kNaN : kind == 1 ? kInf : kind == 2 ? -kInf
                     : kind == 3 ? -0.0 : kind == 4 ? 0.0 : kind == 5 ? -kNaN
                     : double(int(rng() % 9) - 4) * 0.25;
      sd[c] = v;
      sf[c] = float(v);
    }
    check_bitonic_ranks(sd);
    check_bitonic_ranks(sf);
  }
  // distinct random scores, a larger sort
  std::normal_distribution<double> normal;
  std::vector<double> big(2048);
  for (auto& v : big) v = normal(rng);
  check_bitonic_ranks(big);
  EXPECT(cprl::sort_length(1) == 1 && cprl::sort_length(2048) == 2048 &&
         cprl::sort_length(2049) == 4096);
}

// docs/maths.md's definition: r = #{s_j < s_c} + #{j < c : s_j == s_c}; NaN after +inf.
void test_hard_rank_definition() {
  const std::vector<double> s = {0.5, -1.0, 0.5, kNaN, kInf, 0.5, -kInf, kNaN};
  const std::vector<int64_t> want = {2, 1, 3, 6, 5, 4, 0, 7};
  for (int64_t c = 0; c < int64_t(s.size()); ++c)
    EXPECT(cprl::hard_rank_count(s.data(), int64_t(s.size()), c) == want[c]);
}

void test_soft_rank_limit() {
  const std::vector<double> s = {0.3, -1.2, 2.0, 0.31, -0.4};
  const int64_t C = int64_t(s.size());
  for (int64_t c = 0; c < C; ++c) {
    const double hard = double(cprl::hard_rank_count(s.data(), C, c));
    EXPECT_NEAR(cprl::soft_rank(s.data(), C, c, 1e-5), hard, 1e-9);
  }
  // a tie counts one half
  const std::vector<double> t = {1.0, 1.0};
  EXPECT_NEAR(cprl::soft_rank(t.data(), 2, 0, 0.1), 0.5, 1e-15);
}

// soft_rank_backward is the gradient of L = sum_c G_c * r_c(s).
void test_soft_rank_backward_finite_difference() {
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  const int64_t C = 9;
  const double tau = 0.7;
  std::vector<double> s(C), G(C);
  for (auto& v : s) v = normal(rng);
  for (auto& v : G) v = normal(rng);
  auto loss = [&](const std::vector<double>& x) {
    double l = 0;
    for (int64_t c = 0; c < C; ++c) l += G[c] * cprl::soft_rank(x.data(), C, c, tau);
    return l;
  };
  for (int64_t k = 0; k < C; ++k) {
    std::vector<double> up = s, down = s;
    up[k] += 1e-6;
    down[k] -= 1e-6;
    const double fd = (loss(up) - loss(down)) / 2e-6;
    EXPECT_NEAR(cprl::soft_rank_backward(s.data(), G.data(), C, k, tau), fd, 1e-6);
  }
}

void test_mask_value() {
  // M = sigmoid((r - C/2 + b*C) / T)
  EXPECT_NEAR(cprl::mask_value(3.0, 10, 0.4, 1.0), 1.0 / (1.0 + std::exp(-2.0)), 1e-15);
  EXPECT_NEAR(cprl::mask_value(5.0, 10, 0.0, 1.0), 0.5, 1e-15);
  EXPECT_NEAR(cprl::mask_value(0.0, 10, 0.4, 0.5), 1.0 / (1.0 + std::exp(2.0)), 1e-15);
  EXPECT(cprl::sigmoid(-1000.0) == 0.0);
  EXPECT(cprl::sigmoid(1000.0) == 1.0);
  EXPECT(cprl::sigmoid(-200.0f) == 0.0f);
}

void test_scalar_helpers() {
  EXPECT(std::isnan(cprl::relu(kNaN)));
  EXPECT(cprl::relu(-2.0) == 0.0 && cprl::relu(3.0) == 3.0);
  EXPECT(std::isnan(cprl::nan_max(kNaN, 1.0)) && std::isnan(cprl::nan_max(1.0, kNaN)));
  EXPECT(std::isnan(cprl::nan_min(kNaN, 1.0)) && std::isnan(cprl::nan_min(1.0, kNaN)));
  EXPECT(cprl::nan_max(1.0, 2.0) == 2.0 && cprl::nan_min(1.0, 2.0) == 1.0);
  EXPECT(cprl::sign(0.0) == 0.0 && cprl::sign(-0.0) == 0.0 && cprl::sign(kNaN) == 0.0);
  EXPECT(cprl::sign(-3.0) == -1.0 && cprl::sign(1e-300) == 1.0);
}

void test_intervene() {
  using cprl::InterveneMode;
  const double f = 1.5, t = -0.5;
  // mask 1: SF keeps f, NC takes t; mask 0: the opposite
  EXPECT(cprl::intervene_value(f, t, cprl::intervene_weights(1.0, InterveneMode::kSF)) == f);
  EXPECT(cprl::intervene_value(f, t, cprl::intervene_weights(1.0, InterveneMode::kNC)) == 0.0);
  EXPECT(cprl::intervene_value(f, t, cprl::intervene_weights(0.0, InterveneMode::kNC)) == f);
  EXPECT(cprl::intervene_value(f, 2.0, cprl::intervene_weights(0.0, InterveneMode::kSF)) == 2.0);
  const double m = 0.3;
  EXPECT_NEAR(cprl::intervene_value(f, t, cprl::intervene_weights(m, InterveneMode::kSF)),
              t * (1 - m) + f * m, 0);
  EXPECT_NEAR(cprl::intervene_value(f, t, cprl::intervene_weights(m, InterveneMode::kNC)),
              t * m + f * (1 - m), 0);
  EXPECT(cprl::intervene_mask_sign(InterveneMode::kSF) == 1);
  EXPECT(cprl::intervene_mask_sign(InterveneMode::kNC) == -1);
}

// The backward maths against the derivative of the forward by finite differences.
void test_rank_mask_backward() {
  const double m = 0.7;
  for (double f : {-1.5, -1e-3, 0.25, 2.0}) {
    const double gy = 1.3;
    const double h = 1e-6;
    const double numeric = (cprl::rank_mask_apply(f + h, m) - cprl::rank_mask_apply(f - h, m)) /
                           (2 * h);
    EXPECT_NEAR(cprl::rank_mask_gated(f, gy, m) * m, gy * numeric, 1e-8);
  }
  EXPECT(cprl::rank_mask_gated(kNaN, 1.0, 0.5) == 1.0);  // NaN passes, as torch.relu's backward
  // dL/db of one channel: C/T * (A + gM) * M(1-M), against the mask's derivative in b
  const int64_t C = 16;
  const double rank = 5, b = 0.3, T = 0.8, A = 0.6, gM = -0.2;
  const double h = 1e-6;
  const double dM_db = (cprl::mask_value(rank, C, b + h, T) - cprl::mask_value(rank, C, b - h, T)) /
                       (2 * h);
  const double M = cprl::mask_value(rank, C, b, T);
  EXPECT_NEAR(cprl::offset_grad_share(A, gM, M) * double(C) / T, (A + gM) * dM_db, 1e-7);
}

void test_intervene_backward() {
  using cprl::InterveneMode;
  for (auto mode : {InterveneMode::kSF, InterveneMode::kNC}) {
    for (double f : {-0.7, 0.4, 1.9}) {
      for (double t : {-1.1, 0.3}) {
        const double m = 0.35, g = 0.9, h = 1e-6;
        const auto w = cprl::intervene_weights(m, mode);
        const auto grads = cprl::intervene_grads(f, t, g, w);
        auto out = [&](double ff, double tt, double mm) {
          return cprl::intervene_value(ff, tt, cprl::intervene_weights(mm, mode));
        };
        if (std::fabs(cprl::intervene_preact(f, t, w)) < 1e-3) continue;  // at the kink
        EXPECT_NEAR(grads.f, g * (out(f + h, t, m) - out(f - h, t, m)) / (2 * h), 1e-7);
        EXPECT_NEAR(grads.t, g * (out(f, t + h, m) - out(f, t - h, m)) / (2 * h), 1e-7);
        EXPECT_NEAR(grads.m * cprl::intervene_mask_sign(mode),
                    g * (out(f, t, m + h) - out(f, t, m - h)) / (2 * h), 1e-7);
      }
    }
  }
}

void test_attack_step() {
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::normal_distribution<float> normal;
  const float eps = 2.f / 255.f, alpha = 1.5f / 255.f;
  for (int i = 0; i < 10000; ++i) {
    const float x0 = u(rng);
    float x = x0;
    for (int k = 0; k < 5; ++k) {
      const float g = normal(rng);
      const float next = cprl::attack_step_value(x, g, x0, alpha, eps, 0.f, 1.f);
      // within the ball and the range, and never further than one step from x (the clamps
      // project onto an interval that contains x); 1e-6 absorbs float rounding near 1
      EXPECT(std::fabs(next - x0) <= eps + 1e-6f);
      EXPECT(next >= 0.f && next <= 1.f);
      EXPECT(std::fabs(next - x) <= alpha + 1e-6f);
      x = next;
    }
  }
  EXPECT(cprl::attack_step_value(0.5, 0.0, 0.5, 0.1, 0.2, 0.0, 1.0) == 0.5);
  EXPECT(cprl::attack_step_value(0.5, 1.0, 0.5, 0.1, 0.05, 0.0, 1.0) == 0.55);
  EXPECT(cprl::attack_step_value(0.99, 1.0, 0.99, 0.1, 0.2, 0.0, 1.0) == 1.0);
  EXPECT(std::isnan(cprl::attack_step_value(kNaN, 1.0, 0.5, 0.1, 0.2, 0.0, 1.0)));
  EXPECT(std::isnan(cprl::attack_step_value(0.5, 1.0, kNaN, 0.1, 0.2, 0.0, 1.0)));
}

void test_layout_indexing() {
  for (auto layout : {cprl::Layout::kNCHW, cprl::Layout::kNHWC}) {
    const cprl::NCHWSizes sz{3, 5, 7, layout};
    std::vector<int> hits(sz.numel(), 0);
    for (int64_t n = 0; n < sz.N; ++n)
      for (int64_t c = 0; c < sz.C; ++c)
        for (int64_t p = 0; p < sz.HW; ++p) {
          const int64_t i = sz.offset(n, c, p);
          EXPECT(i >= 0 && i < sz.numel());
          if (i < 0 || i >= sz.numel()) continue;
          ++hits[i];
          EXPECT(sz.nc_of(i) == n * sz.C + c);
        }
    for (int h : hits) EXPECT(h == 1);
  }
}

// The GPU loops' per-thread work (core/nc_tiles.h), run for every thread of a grid on the host.
// Odd and even sizes, both layouts, every pack width that divides the row.
const cprl::NCHWSizes kTileShapes[] = {
    {1, 1, 1, cprl::Layout::kNCHW},  {2, 3, 5, cprl::Layout::kNCHW},
    {3, 8, 16, cprl::Layout::kNCHW}, {2, 16, 600, cprl::Layout::kNCHW},
    {2, 3, 5, cprl::Layout::kNHWC},  {3, 8, 16, cprl::Layout::kNHWC},
    {2, 64, 49, cprl::Layout::kNHWC}, {1, 24, 1000, cprl::Layout::kNHWC},
    {2, 520, 9, cprl::Layout::kNHWC},
};

// Counts each element's visits and every channel row that differs from NCHWSizes::nc_of.
struct VisitRecorder {
  const cprl::NCHWSizes* sz;
  std::vector<int>* hits;
  int* wrong_nc;
  const std::vector<double>* x;  // reduce: the values summed

  template <int V>
  void apply(int64_t i, int64_t nc, int64_t step) const {
    for (int k = 0; k < V; ++k) visit(i + k, nc + k * step);
  }
  template <int V, int STEP>
  void reduce(int64_t i, int64_t nc, double* s0, double* s1) const {
    for (int k = 0; k < V; ++k) {
      visit(i + k, nc + k * STEP);
      s0[k * STEP] += (*x)[i + k];
      s1[k * STEP] += 2 * (*x)[i + k];
    }
  }
  void visit(int64_t i, int64_t nc) const {
    if (i < 0 || i >= sz->numel()) {
      ++*wrong_nc;
      return;
    }
    ++(*hits)[i];
    if (sz->nc_of(i) != nc) ++*wrong_nc;
  }
};

// Records the first element a thread visits.
struct FirstVisit {
  int64_t* first;
  template <int V>
  void apply(int64_t i, int64_t, int64_t) const {
    if (*first < 0) *first = i;
  }
};

template <int V>
void check_map_grid(const cprl::NCHWSizes& sz, const cprl::MapGeometry& g) {
  for (const auto order : {cprl::RowOrder::kFirstToLast, cprl::RowOrder::kLastToFirst}) {
    std::vector<int> hits(sz.numel(), 0);
    int wrong = 0;
    const VisitRecorder rec{&sz, &hits, &wrong, nullptr};
    for (int64_t by = 0; by < g.gy; ++by)
      for (int64_t bx = 0; bx < g.gx; ++bx)
        for (int64_t ty = 0; ty < g.dy; ++ty)
          for (int64_t tx = 0; tx < g.dx; ++tx)
            cprl::map_thread<V>(sz, {bx, by, tx, ty, g.gx, g.gy, g.dx, g.dy}, rec, order);
    EXPECT(wrong == 0);
    for (int h : hits) EXPECT(h == 1);
    // the grid's first thread starts on the first row, or on the last
    int64_t first = -1;
    cprl::map_thread<V>(sz, {0, 0, 0, 0, g.gx, g.gy, g.dx, g.dy}, FirstVisit{&first}, order);
    const int64_t len = cprl::row_length(sz);
    EXPECT(first == (order == cprl::RowOrder::kFirstToLast ? 0 : sz.numel() - len));
  }
}

template <int V>
void check_map(const cprl::NCHWSizes& sz) {
  if (cprl::row_length(sz) % V != 0) return;
  for (int64_t sms : {1, 4, 132}) {
    const cprl::MapGeometry g = cprl::map_geometry(sz, V, sms);
    EXPECT(g.dx >= 32 && g.dx * g.dy == 256 && g.gx >= 1 && g.gy >= 1 && g.gy <= 65535);
    check_map_grid<V>(sz, g);
  }
  check_map_grid<V>(sz, {32, 2, 3, 2});  // grid-stride in both dimensions
}

void test_nc_tiles_map() {
  for (const auto& sz : kTileShapes) {
    check_map<1>(sz);
    check_map<2>(sz);
    check_map<4>(sz);
    check_map<8>(sz);
  }
  EXPECT(cprl::vector_width(6400, 4, true) == 4);
  EXPECT(cprl::vector_width(49, 4, true) == 1);
  EXPECT(cprl::vector_width(64, 8, false) == 1);
  alignas(16) float buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const auto pk = cprl::load_pack<4>(buf, 4);
  EXPECT(pk.v[0] == 5.f && pk.v[3] == 8.f);
  cprl::store_pack<4>(buf, 0, pk);
  EXPECT(buf[0] == 5.f && buf[3] == 8.f && buf[4] == 5.f);
}

// Sums x by channel row through the per-thread reduce functions and compares with a direct
// sum: NCHW as blocks of 8 warps of `lanes` lanes per row (the shuffle adds a row's lanes),
// NHWC as blocks of 8 pixel lanes over `splits` pixel splits (the second kernel adds the
// splits).
template <int V>
void check_reduce_once(const cprl::NCHWSizes& sz, int64_t splits, int64_t lanes = 32) {
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> x(sz.numel());
  for (auto& v : x) v = u(gen);
  std::vector<double> want(sz.N * sz.C, 0.0), got0(sz.N * sz.C, 0.0), got1(sz.N * sz.C, 0.0);
  for (int64_t i = 0; i < sz.numel(); ++i) want[sz.nc_of(i)] += x[i];
  std::vector<int> hits(sz.numel(), 0);
  int wrong = 0;
  const VisitRecorder rec{&sz, &hits, &wrong, &x};
  if (sz.layout == cprl::Layout::kNCHW) {  // the kernel's grid, thread by thread
    const int64_t rows = sz.N * sz.C;
    const int64_t rows_per_block = 8 * (32 / lanes);
    std::vector<int> lane_hits(rows * lanes, 0);
    for (int64_t block = 0; block < (rows + rows_per_block - 1) / rows_per_block; ++block)
      for (int64_t thread = 0; thread < 8 * 32; ++thread) {
        const cprl::RowLane rl = cprl::nchw_row_lane(block, thread, 8, lanes);
        EXPECT(rl.lane >= 0 && rl.lane < lanes && rl.row >= 0);
        if (rl.row >= rows) continue;
        ++lane_hits[rl.row * lanes + rl.lane];
        double s0 = 0, s1 = 0;
        cprl::reduce_row_lane<V>(sz, rl.row, rl.lane, lanes, rec, s0, s1);
        got0[rl.row] += s0;
        got1[rl.row] += s1;
      }
    for (int h : lane_hits) EXPECT(h == 1);  // each row's lanes, once each
  } else {  // each block's 8 lanes added into the partial sums [N, splits, C], then the splits
    std::vector<double> part0(sz.N * splits * sz.C, 0.0), part1(part0.size(), 0.0);
    for (int64_t n = 0; n < sz.N; ++n)
      for (int64_t c0 = 0; c0 < sz.C; c0 += V)
        for (int64_t s = 0; s < splits; ++s)
          for (int64_t ty = 0; ty < 8; ++ty) {
            double s0[V] = {}, s1[V] = {};
            cprl::reduce_pixels_thread<V>(sz, n, c0, cprl::split_pixels(sz.HW, splits, s), ty, 8,
                                          rec, s0, s1);
            for (int k = 0; k < V; ++k) {
              part0[cprl::partial_index(n, s, splits, sz.C, c0 + k)] += s0[k];
              part1[cprl::partial_index(n, s, splits, sz.C, c0 + k)] += s1[k];
            }
          }
    for (int64_t n = 0; n < sz.N; ++n)
      for (int64_t c = 0; c < sz.C; ++c) {
        got0[n * sz.C + c] = cprl::split_sum(part0.data(), n, splits, sz.C, c);
        got1[n * sz.C + c] = cprl::split_sum(part1.data(), n, splits, sz.C, c);
      }
  }
  EXPECT(wrong == 0);
  for (int h : hits) EXPECT(h == 1);
  for (int64_t nc = 0; nc < sz.N * sz.C; ++nc) {
    EXPECT_NEAR(got0[nc], want[nc], 1e-9);
    EXPECT_NEAR(got1[nc], 2 * want[nc], 1e-9);
  }
}

template <int V>
void check_reduce(const cprl::NCHWSizes& sz) {
  if (cprl::row_length(sz) % V != 0) return;
  if (sz.layout == cprl::Layout::kNCHW) {
    for (int64_t lanes : {8, 16, 32}) check_reduce_once<V>(sz, 1, lanes);
    return;
  }
  for (int64_t splits : {cprl::nhwc_splits(sz.HW), int64_t(3), sz.HW + 2})
    check_reduce_once<V>(sz, splits);
}

void test_nc_tiles_reduce() {
  for (const auto& sz : kTileShapes) {
    check_reduce<1>(sz);
    check_reduce<2>(sz);
    check_reduce<4>(sz);
    check_reduce<8>(sz);
  }
  EXPECT(cprl::nchw_row_lanes(49) == 8 && cprl::nchw_row_lanes(100) == 16 &&
         cprl::nchw_row_lanes(1600) == 32);
  EXPECT(cprl::nhwc_splits(1) == 1 && cprl::nhwc_splits(257) == 2);
  EXPECT(cprl::nhwc_splits(1 << 20) == 64);
  for (int64_t splits : {1, 3, 7}) {  // the splits tile [0, HW) without overlap
    int64_t next = 0;
    for (int64_t s = 0; s < splits; ++s) {
      const cprl::PixelRange r = cprl::split_pixels(10, splits, s);
      EXPECT(r.begin == next && r.end >= r.begin);
      next = r.end;
    }
    EXPECT(next == 10);
  }
}

const std::vector<std::pair<std::string, std::function<void()>>> kTests = {
    {"hard_rank_sort_equals_count", test_hard_rank_sort_equals_count},
    {"hard_rank_definition", test_hard_rank_definition},
    {"hard_rank_bitonic_sort", test_hard_rank_bitonic_sort},
    {"soft_rank_limit", test_soft_rank_limit},
    {"soft_rank_backward", test_soft_rank_backward_finite_difference},
    {"mask_value", test_mask_value},
    {"scalar_helpers", test_scalar_helpers},
    {"rank_mask_backward", test_rank_mask_backward},
    {"intervene", test_intervene},
    {"intervene_backward", test_intervene_backward},
    {"attack_step", test_attack_step},
    {"layout_indexing", test_layout_indexing},
    {"nc_tiles_map", test_nc_tiles_map},
    {"nc_tiles_reduce", test_nc_tiles_reduce},
};

}  // namespace

int main(int argc, char** argv) {
  int ran = 0;
  for (const auto& [name, fn] : kTests) {
    if (argc > 1 && name != argv[1]) continue;
    fn();
    ++ran;
  }
  if (ran == 0) {
    std::fprintf(stderr, "no test named %s\n", argc > 1 ? argv[1] : "");
    return 2;
  }
  if (g_failures) std::fprintf(stderr, "%d expectation(s) failed\n", g_failures);
  return g_failures ? 1 : 0;
}

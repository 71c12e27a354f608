// C++17/OpenMP CPU kernels of ldb_hpc.ops, bound with nanobind as the extension module ldb_hpc._cpu.
//
// The contract of every op is the pure-torch reference, ldb_hpc/ops/reference.py. Python (ldb_hpc/ops/cpu.py)
// validates shapes, makes inputs contiguous with the right dtypes, allocates every output and passes the
// tables (ideal geometry, Z-matrix, slot masks) as arrays; the kernels here write every output element.
// Float32 arithmetic follows the reference's order of operations (built with -ffp-contract=off) so that
// indices agree exactly and coordinates to float32 rounding; the noise hash is bit-exact uint32 arithmetic.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#ifdef LDB_HAVE_LIBMVEC
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <limits>
#include <string>
#include <vector>

#include "geometry.h"

namespace nb = nanobind;
using ldb::Basis;
using ldb::Vec3;

template <typename T>
using In = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;
template <typename T>
using Out = nb::ndarray<T, nb::c_contig, nb::device::cpu>;

namespace {

constexpr int kSlots = 14;
constexpr int kFirstSideChainSlot = 5;

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// Every index must lie in [0, n): checked once, serially, before a parallel loop reads through it.
void check_range(const int64_t* idx, size_t count, int64_t n, const char* name) {
  for (size_t i = 0; i < count; ++i)
    if (idx[i] < 0 || idx[i] >= n)
      throw std::out_of_range(std::string(name) + " holds index " + std::to_string(idx[i]) +
                              " outside [0, " + std::to_string(n) + ")");
}

// ---------------------------------------------------------------------------------------------------
// vq_nearest: index of the nearest code, d² accumulated in float32 in channel order; first minimum wins
// (a NaN distance counts as the minimum, as torch.argmin).
//
// The two inner loops are compiled for AVX-512, AVX2 and baseline x86-64 (GCC's target_clones; the loader picks
// the widest the CPU has). Each d² is the same sequence of roundings on every path (-ffp-contract=off: no FMA),
// and the minimum is found lane-wise then located with ==, so every path gives the same index bit for bit.
// (Measured alone, 8,640 rows × 4,096 codes × 8 channels: 72 ms before, 34 ms with AVX-512.)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define LDB_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LDB_CLONES
#endif

// Blocks of 64 codes accumulate in registers over the channels (in channel order, from 0): the d² array is
// written once instead of read and written once per channel.
LDB_CLONES static void vq_distances(const float* zn, const float* cbt, int64_t d, int64_t K, float* dp) {
  constexpr int64_t B = 64;
  for (int64_t k0 = 0; k0 < K; k0 += B) {
    const int64_t kb = std::min(B, K - k0);
    float acc[B];
    for (int64_t j = 0; j < B; ++j) acc[j] = 0.f;
    if (kb == B) {  // a constant trip count: fully unrolled into 4 (AVX-512) or 8 (AVX2) vector registers
      for (int64_t c = 0; c < d; ++c) {
        const float zc = zn[c];
        const float* e = cbt + c * K + k0;
        for (int64_t j = 0; j < B; ++j) {
          const float t = zc - e[j];
          acc[j] += t * t;
        }
      }
    } else {
      for (int64_t c = 0; c < d; ++c) {
        const float zc = zn[c];
        const float* e = cbt + c * K + k0;
        for (int64_t j = 0; j < kb; ++j) {
          const float t = zc - e[j];
          acc[j] += t * t;
        }
      }
    }
    for (int64_t j = 0; j < kb; ++j) dp[k0 + j] = acc[j];
  }
}

// Index of the first minimum of dp[0..K), or −1 when some entry is NaN (the caller then scans in order).
LDB_CLONES static int64_t vq_first_min(const float* dp, int64_t K) {
  constexpr int64_t W = 16;
  float lane[W];
  for (int64_t j = 0; j < W; ++j) lane[j] = std::numeric_limits<float>::infinity();
  int nan = 0;
  int64_t k = 0;
  for (; k + W <= K; k += W)
    for (int64_t j = 0; j < W; ++j) {
      const float v = dp[k + j];
      nan |= (v != v);
      lane[j] = v < lane[j] ? v : lane[j];
    }
  float bv = std::numeric_limits<float>::infinity();
  for (; k < K; ++k) {
    const float v = dp[k];
    nan |= (v != v);
    bv = v < bv ? v : bv;
  }
  if (nan) return -1;
  for (int64_t j = 0; j < W; ++j) bv = lane[j] < bv ? lane[j] : bv;
  for (k = 0; k < K; ++k)
    if (dp[k] == bv) return k;
  return 0;
}

void vq_nearest(In<float> z, In<float> codebook, Out<int64_t> index, Out<float> quantized, int threads) {
  require(z.ndim() == 2 && codebook.ndim() == 2 && z.shape(1) == codebook.shape(1), "vq_nearest: shapes");
  const int64_t N = z.shape(0), d = z.shape(1), K = codebook.shape(0);
  require(index.ndim() == 1 && index.shape(0) == size_t(N), "vq_nearest: index shape");
  require(quantized.ndim() == 2 && quantized.shape(0) == size_t(N) && quantized.shape(1) == size_t(d),
          "vq_nearest: quantized shape");
  require(K > 0 || N == 0, "vq_nearest: empty codebook");
  const float* zp = z.data();
  const float* cb = codebook.data();
  int64_t* ip = index.data();
  float* qp = quantized.data();
  // Channel-major copy of the codebook so the inner loop over codes is contiguous (vectorisable).
  std::vector<float> cbt(static_cast<size_t>(K * d));
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < d; ++c) cbt[size_t(c * K + k)] = cb[k * d + c];

#pragma omp parallel num_threads(threads)
  {
    std::vector<float> dist(static_cast<size_t>(K));
    float* dp = dist.data();
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      vq_distances(zp + n * d, cbt.data(), d, K, dp);
      int64_t best = vq_first_min(dp, K);
      if (best < 0) {  // a NaN: the first NaN (or the first minimum before it), as torch.argmin
        best = 0;
        float bv = dp[0];
        if (!std::isnan(bv)) {
          for (int64_t k = 1; k < K; ++k) {
            const float v = dp[k];
            if (v < bv) { bv = v; best = k; }
            else if (std::isnan(v)) { best = k; break; }
          }
        }
      }
      ip[n] = best;
      for (int64_t c = 0; c < d; ++c) qp[n * d + c] = cb[best * d + c];
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Counter-based noise (ldb_hpc/model/noise.py): lowbias32 on uint32, key folded component by component,
// Box–Muller in float64, cast to float32.

inline uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// One step of noise.hash_key: h ← mix(h ^ mix(part + 0x9E3779B9·(i+1))) with uint32 wrap-around.
inline uint32_t fold(uint32_t h, int64_t part, uint32_t i) {
  const uint32_t salt = uint32_t(0x9E3779B9ull * uint64_t(i + 1));
  return mix32(h ^ mix32(uint32_t(uint64_t(part)) + salt));
}

inline double uniform_a(uint32_t base) { return (double(mix32(base ^ 0x68E31DA4u)) + 0.5) / 4294967296.0; }
inline double uniform_b(uint32_t base) { return (double(mix32(base ^ 0xB5297A4Du)) + 0.5) / 4294967296.0; }

inline float box_muller(double u1, double u2) {
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

#ifdef LDB_HAVE_LIBMVEC
// glibc's vector math (libmvec, x86-64 vector ABI names): 2 lanes (SSE, any x86-64) and 4 lanes (AVX2, picked
// at run time). Accurate to a few float64 ulps like the scalar libm, so the float32 results are the same.
extern "C" {
__m128d _ZGVbN2v_log(__m128d);
__m128d _ZGVbN2v_cos(__m128d);
__m256d _ZGVdN4v_log(__m256d);
__m256d _ZGVdN4v_cos(__m256d);
}

__attribute__((target("avx2"))) int64_t box_muller_avx2(const double* u1, const double* u2, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d l = _ZGVdN4v_log(_mm256_loadu_pd(u1 + i));
    const __m256d c = _ZGVdN4v_cos(_mm256_mul_pd(_mm256_set1_pd(2.0 * M_PI), _mm256_loadu_pd(u2 + i)));
    const __m256d z = _mm256_mul_pd(_mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), l)), c);
    _mm_storeu_ps(out + i, _mm256_cvtpd_ps(z));
  }
  return i;
}

int64_t box_muller_sse(const double* u1, const double* u2, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 2 <= n; i += 2) {
    const __m128d l = _ZGVbN2v_log(_mm_loadu_pd(u1 + i));
    const __m128d c = _ZGVbN2v_cos(_mm_mul_pd(_mm_set1_pd(2.0 * M_PI), _mm_loadu_pd(u2 + i)));
    const __m128d z = _mm_mul_pd(_mm_sqrt_pd(_mm_mul_pd(_mm_set1_pd(-2.0), l)), c);
    const __m128 f = _mm_cvtpd_ps(z);
    out[i] = _mm_cvtss_f32(f);
    out[i + 1] = _mm_cvtss_f32(_mm_shuffle_ps(f, f, 1));
  }
  return i;
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2");
#endif

// out[c] = normal keyed by the row hash h (residue folded in) and channel c, for c < D.
void normals_of_row(uint32_t h, int64_t D, float* out) {
  constexpr int64_t kChunk = 64;
  double u1[kChunk], u2[kChunk];
  for (int64_t c0 = 0; c0 < D; c0 += kChunk) {
    const int64_t n = std::min(kChunk, D - c0);
    for (int64_t c = 0; c < n; ++c) {
      const uint32_t base = fold(h, c0 + c, 5);
      u1[c] = uniform_a(base);
      u2[c] = uniform_b(base);
    }
    int64_t done = 0;
#ifdef LDB_HAVE_LIBMVEC
    done = kHaveAvx2 ? box_muller_avx2(u1, u2, out + c0, n) : box_muller_sse(u1, u2, out + c0, n);
#endif
    for (int64_t c = done; c < n; ++c) out[c0 + c] = box_muller(u1[c], u2[c]);
  }
}

// Hash state after (seed, frame, sample, step): the residue and channel are folded in per element.
inline uint32_t prefix_hash(int64_t seed, int64_t frame, int64_t sample, int64_t step) {
  uint32_t h = fold(0u, seed, 0);
  h = fold(h, frame, 1);
  h = fold(h, sample, 2);
  return fold(h, step, 3);
}

void gaussian_noise(int64_t seed, In<int64_t> frame_ids, int64_t samples, int64_t step, int64_t n_res,
                    int64_t dim, Out<float> out, int threads) {
  const int64_t B = frame_ids.ndim() == 1 ? int64_t(frame_ids.shape(0)) : -1;
  require(B >= 0, "gaussian_noise: frame_ids must be 1-d");
  require(out.ndim() == 4 && out.shape(0) == size_t(B) && out.shape(1) == size_t(samples) &&
              out.shape(2) == size_t(n_res) && out.shape(3) == size_t(dim),
          "gaussian_noise: out shape");
  const int64_t* fp = frame_ids.data();
  float* op = out.data();
  const int64_t rows = B * samples * n_res;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t l = r % n_res, bs = r / n_res, s = bs % samples, b = bs / samples;
    normals_of_row(fold(prefix_hash(seed, fp[b], s, step), l, 4), dim, op + r * dim);
  }
}

// x0 = (x_t − c1·eps) / c0; out = c2·x0 + c3·eps (+ c4·noise), in float32 like the reference.
void diffusion_step(In<float> x_t, In<float> eps, double c0, double c1, double c2, double c3, double c4,
                    int64_t seed, int64_t step, In<int64_t> frame_ids, Out<float> out, int threads) {
  require(x_t.ndim() == 4 && eps.ndim() == 4 && out.ndim() == 4, "diffusion_step: tensors must be [B, S, L, D]");
  for (size_t i = 0; i < 4; ++i)
    require(eps.shape(i) == x_t.shape(i) && out.shape(i) == x_t.shape(i), "diffusion_step: shapes differ");
  const int64_t B = x_t.shape(0), S = x_t.shape(1), L = x_t.shape(2), D = x_t.shape(3);
  require(frame_ids.ndim() == 1 && frame_ids.shape(0) == size_t(B), "diffusion_step: frame_ids shape");
  const float f0 = float(c0), f1 = float(c1), f2 = float(c2), f3 = float(c3), f4 = float(c4);
  const bool noisy = c4 != 0.0;
  const float* xp = x_t.data();
  const float* ep = eps.data();
  const int64_t* fp = frame_ids.data();
  float* op = out.data();
  const int64_t rows = B * S * L;
  if (!noisy) {  // deterministic DDIM (backmap's default): one flat, vectorisable pass
    const int64_t total = rows * D;
#pragma omp parallel for num_threads(threads) schedule(static) if (total > (1 << 14))
    for (int64_t i = 0; i < total; ++i) {
      const float x0 = (xp[i] - f1 * ep[i]) / f0;
      op[i] = f2 * x0 + f3 * ep[i];
    }
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> noise(static_cast<size_t>(D));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t l = r % L, bs = r / L, s = bs % S, b = bs / S;
      normals_of_row(fold(prefix_hash(seed, fp[b], s, step), l, 4), D, noise.data());
      for (int64_t c = 0; c < D; ++c) {
        const int64_t i = r * D + c;
        const float x0 = (xp[i] - f1 * ep[i]) / f0;
        const float v = f2 * x0 + f3 * ep[i];
        op[i] = v + f4 * noise[size_t(c)];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// build_atoms: ideal-geometry atom builder per residue row (geometry.atoms.atoms_from_backbone), proline rings
// closed by the same grid search as ideal.close_proline_rings.

struct BuildTables {
  const float *bond, *angle, *offset;          // [T, 14]
  const int64_t *refs, *torsion;               // [T, 14, 3], [T, 14]
  const uint8_t *placed, *exists;              // [T, 14]
  int64_t n_types;
};

void build_atoms(In<float> n, In<float> ca, In<float> c, In<float> o_torsion, In<float> chi, In<int64_t> restype,
                 In<float> bond, In<float> angle, In<float> offset, In<int64_t> zm_refs, In<int64_t> zm_torsion,
                 In<uint8_t> zm_mask, In<uint8_t> slot_mask, int64_t pro, In<float> pro_chi1_delta,
                 In<float> pro_chi2_grid, float pro_cd_n_length, float pro_tie_weight, Out<float> out,
                 int threads) {
  const int64_t M = restype.ndim() == 1 ? int64_t(restype.shape(0)) : -1;
  require(M >= 0, "build_atoms: restype must be 1-d");
  auto rows_of = [&](const auto& a, size_t cols) {
    return a.ndim() == 2 && a.shape(0) == size_t(M) && a.shape(1) == cols;
  };
  require(rows_of(n, 3) && rows_of(ca, 3) && rows_of(c, 3) && rows_of(chi, 4), "build_atoms: input shapes");
  require(o_torsion.ndim() == 1 && o_torsion.shape(0) == size_t(M), "build_atoms: o_torsion shape");
  require(out.ndim() == 3 && out.shape(0) == size_t(M) && out.shape(1) == kSlots && out.shape(2) == 3,
          "build_atoms: out shape");
  const int64_t T = bond.ndim() == 2 ? int64_t(bond.shape(0)) : 0;
  require(T > 0 && bond.shape(1) == kSlots && angle.shape(0) == size_t(T) && offset.shape(0) == size_t(T) &&
              zm_refs.shape(0) == size_t(T) && zm_refs.shape(1) == kSlots && zm_refs.shape(2) == 3 &&
              zm_torsion.shape(0) == size_t(T) && zm_mask.shape(0) == size_t(T) && slot_mask.shape(0) == size_t(T),
          "build_atoms: table shapes");
  require(pro_chi1_delta.ndim() == 1 && pro_chi2_grid.ndim() == 1 && pro_chi1_delta.shape(0) > 0 &&
              pro_chi2_grid.shape(0) > 0, "build_atoms: proline grids");
  const int64_t* rt = restype.data();
  check_range(rt, size_t(M), T, "restype");
  const BuildTables tb{bond.data(), angle.data(), offset.data(), zm_refs.data(), zm_torsion.data(),
                       zm_mask.data(), slot_mask.data(), T};
  for (int64_t i = 0; i < T * kSlots; ++i) {
    require(tb.torsion[i] < 5, "build_atoms: torsion channel out of range");
    for (int k = 0; k < 3; ++k)
      require(!tb.placed[i] || (tb.refs[i * 3 + k] >= 0 && tb.refs[i * 3 + k] < i % kSlots),
              "build_atoms: Z-matrix reference out of order");
  }
  const int64_t n1 = pro_chi1_delta.shape(0), n2 = pro_chi2_grid.shape(0);
  const float* d1 = pro_chi1_delta.data();
  const bool has_pro = pro >= 0 && pro < T;
  // The χ2 grid's NeRF local vectors do not depend on the residue: computed once.
  std::vector<Vec3> cd_local(static_cast<size_t>(n2));
  if (has_pro)
    for (int64_t j = 0; j < n2; ++j)
      cd_local[size_t(j)] = ldb::nerf_local(tb.bond[pro * kSlots + 6], tb.angle[pro * kSlots + 6],
                                            tb.offset[pro * kSlots + 6] + pro_chi2_grid.data()[j]);
  const float *np_ = n.data(), *cap = ca.data(), *cp = c.data(), *otp = o_torsion.data(), *chp = chi.data();
  float* op = out.data();

#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const int64_t r = rt[m];
    const Vec3 N = ldb::load(np_ + 3 * m), A = ldb::load(cap + 3 * m), C = ldb::load(cp + 3 * m);
    const Basis R = ldb::basis_from_two_vectors(ldb::sub(C, A), ldb::sub(N, A));
    Vec3 pos[kSlots];
    // N, CA, C through the frame and back, as the reference does (equal to the input to rounding).
    const Vec3 bb[3] = {N, A, C};
    for (int k = 0; k < 3; ++k) pos[k] = ldb::add(R.apply(R.apply_t(ldb::sub(bb[k], A))), A);
    const float tors[5] = {otp[m], chp[4 * m], chp[4 * m + 1], chp[4 * m + 2], chp[4 * m + 3]};
    for (int s = 3; s < kSlots; ++s) {
      const int64_t e = r * kSlots + s;
      if (!tb.placed[e]) { pos[s] = {0.f, 0.f, 0.f}; continue; }
      const int64_t ch = tb.torsion[e];
      const float tor = tb.offset[e] + (ch >= 0 ? tors[ch] : 0.f);
      const int64_t* ref = tb.refs + 3 * e;
      pos[s] = ldb::nerf(pos[ref[0]], pos[ref[1]], pos[ref[2]], tb.bond[e], tb.angle[e], tor);
    }
    if (has_pro && r == pro) {
      // Grid search of χ1 (given ± deltas) × χ2 for the CD–N distance nearest its ideal length.
      const Vec3 pn = pos[0], pca = pos[1], pcb = pos[4];
      const Basis Rg = ldb::basis_from_two_vectors(ldb::sub(pcb, pca), ldb::sub(pn, pca));
      const float chi1 = chp[4 * m];
      float best_err = 0.f;
      int64_t best = -1;
      Vec3 best_cg{}, best_cd{};
      for (int64_t i = 0; i < n1; ++i) {
        const float c1 = chi1 + d1[i];
        const Vec3 cg = ldb::add(pcb, Rg.apply(ldb::nerf_local(tb.bond[pro * kSlots + 5], tb.angle[pro * kSlots + 5],
                                                              tb.offset[pro * kSlots + 5] + c1)));
        const Basis Rd = ldb::basis_from_two_vectors(ldb::sub(cg, pcb), ldb::sub(pca, pcb));
        const float tie = pro_tie_weight * std::fabs(c1 - chi1);
        for (int64_t j = 0; j < n2; ++j) {
          const Vec3 cd = ldb::add(cg, Rd.apply(cd_local[size_t(j)]));
          const Vec3 dv = ldb::sub(cd, pn);
          const float err = std::fabs(std::sqrt(ldb::dot(dv, dv)) - pro_cd_n_length) + tie;
          if (best < 0 || err < best_err || (std::isnan(err) && !std::isnan(best_err))) {
            best_err = err; best = i * n2 + j; best_cg = cg; best_cd = cd;
          }
        }
      }
      pos[5] = best_cg;
      pos[6] = best_cd;
    }
    float* o = op + m * kSlots * 3;
    for (int s = 0; s < kSlots; ++s) {
      const Vec3 v = tb.exists[r * kSlots + s] ? pos[s] : Vec3{0.f, 0.f, 0.f};
      ldb::store(o + 3 * s, v);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Clash kernels. A pair (a of residue i, b of neighbour j) counts when a is a present side-chain atom
// (slot ≥ 5), b is present, b is not the Pro CD of a sequence-adjacent j, and (a, b) is not Cys SG–Cys SG
// (reference.pair_counts), decided inline from restype and adjacent.

struct ClashArgs {
  const float* pos;         // [R, 14, 3]
  const int64_t* nbr;       // [R, k]
  const uint8_t* adjacent;  // [R, k]
  const int64_t* restype;   // [R]
  const uint8_t* exists;    // [T, 14]
  int64_t R, k, pro, cys;
};

inline bool pair_counts(const ClashArgs& a, int64_t rt_i, int ai, int64_t rt_j, int bj, bool adjacent) {
  if (ai < kFirstSideChainSlot || !a.exists[rt_i * kSlots + ai] || !a.exists[rt_j * kSlots + bj]) return false;
  if (adjacent && rt_j == a.pro && bj == 6) return false;
  if (rt_i == a.cys && ai == 5 && rt_j == a.cys && bj == 5) return false;
  return true;
}

// Present atoms of a residue row and a bounding sphere, so far-apart pairs of residues are skipped exactly.
struct Atoms {
  Vec3 p[kSlots];
  int slot[kSlots];
  int count = 0;
  Vec3 centre{};
  float radius = 0.f;
  void finish() {
    if (count == 0) return;
    Vec3 lo = p[0], hi = p[0];
    for (int i = 1; i < count; ++i) {
      lo = {std::min(lo.x, p[i].x), std::min(lo.y, p[i].y), std::min(lo.z, p[i].z)};
      hi = {std::max(hi.x, p[i].x), std::max(hi.y, p[i].y), std::max(hi.z, p[i].z)};
    }
    centre = {0.5f * (lo.x + hi.x), 0.5f * (lo.y + hi.y), 0.5f * (lo.z + hi.z)};
    float r2 = 0.f;
    for (int i = 0; i < count; ++i) {
      const Vec3 d = ldb::sub(p[i], centre);
      r2 = std::max(r2, ldb::dot(d, d));
    }
    radius = std::sqrt(r2);
  }
};

// Atoms of row `row` (or of `coords`, a [14, 3] candidate) whose slot passes `keep`.
template <typename Keep>
inline void gather_atoms(Atoms& out, const float* coords, const uint8_t* exists_row, Keep keep) {
  out.count = 0;
  for (int s = 0; s < kSlots; ++s)
    if (exists_row[s] && keep(s)) {
      out.p[out.count] = ldb::load(coords + 3 * s);
      out.slot[out.count++] = s;
    }
  out.finish();
}

// True when every pair between the two atom sets is at least `cutoff` apart (with a margin for rounding).
inline bool far_apart(const Atoms& u, const Atoms& v, float cutoff) {
  if (u.count == 0 || v.count == 0) return true;
  const Vec3 d = ldb::sub(u.centre, v.centre);
  const float reach = u.radius + v.radius + cutoff + 1e-3f;
  return ldb::dot(d, d) > reach * reach * 1.0001f;
}

void check_clash_inputs(const In<float>& pos, const In<int64_t>& rows, const In<int64_t>& nbr,
                        const In<uint8_t>& adjacent, const In<int64_t>& restype, const In<uint8_t>& slot_mask) {
  require(pos.ndim() == 3 && pos.shape(1) == kSlots && pos.shape(2) == 3, "clash: pos must be [R, 14, 3]");
  const size_t R = pos.shape(0);
  require(rows.ndim() == 1, "clash: rows must be 1-d");
  require(nbr.ndim() == 2 && nbr.shape(0) == R, "clash: nbr must be [R, k]");
  require(adjacent.ndim() == 2 && adjacent.shape(0) == R && adjacent.shape(1) == nbr.shape(1),
          "clash: adjacent must be [R, k]");
  require(restype.ndim() == 1 && restype.shape(0) == R, "clash: restype must be [R]");
  require(slot_mask.ndim() == 2 && slot_mask.shape(1) == kSlots, "clash: slot_mask must be [T, 14]");
  check_range(rows.data(), rows.shape(0), int64_t(R), "rows");
  check_range(nbr.data(), nbr.shape(0) * nbr.shape(1), int64_t(R), "nbr");
  check_range(restype.data(), R, int64_t(slot_mask.shape(0)), "restype");
}

void clash_flags(In<float> pos, In<int64_t> rows, In<int64_t> nbr, In<uint8_t> adjacent, In<int64_t> restype,
                 float trigger, In<uint8_t> slot_mask, int64_t pro, int64_t cys, Out<uint8_t> out, int threads) {
  check_clash_inputs(pos, rows, nbr, adjacent, restype, slot_mask);
  const int64_t M = rows.shape(0);
  require(out.ndim() == 1 && out.shape(0) == size_t(M), "clash_flags: out shape");
  const ClashArgs a{pos.data(), nbr.data(), adjacent.data(), restype.data(), slot_mask.data(),
                    int64_t(pos.shape(0)), int64_t(nbr.shape(1)), pro, cys};
  const int64_t* rp = rows.data();
  uint8_t* op = out.data();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 16)
  for (int64_t m = 0; m < M; ++m) {
    const int64_t r = rp[m], rt_i = a.restype[r];
    Atoms mine, other;
    gather_atoms(mine, a.pos + r * kSlots * 3, a.exists + rt_i * kSlots,
                 [](int s) { return s >= kFirstSideChainSlot; });
    bool hit = false;
    for (int64_t j = 0; j < a.k && !hit; ++j) {
      const int64_t q = a.nbr[r * a.k + j], rt_j = a.restype[q];
      const bool adj = a.adjacent[r * a.k + j] != 0;
      gather_atoms(other, a.pos + q * kSlots * 3, a.exists + rt_j * kSlots, [](int) { return true; });
      if (far_apart(mine, other, trigger)) continue;
      for (int u = 0; u < mine.count && !hit; ++u)
        for (int v = 0; v < other.count; ++v) {
          if (!pair_counts(a, rt_i, mine.slot[u], rt_j, other.slot[v], adj)) continue;
          const Vec3 d = ldb::sub(mine.p[u], other.p[v]);
          if (std::sqrt(ldb::dot(d, d)) < trigger) { hit = true; break; }
        }
    }
    op[m] = hit ? 1 : 0;
  }
}

void clash_score(In<float> cand, In<float> pos, In<int64_t> rows, In<int64_t> nbr, In<uint8_t> adjacent,
                 In<int64_t> restype, float contact, In<uint8_t> slot_mask, int64_t pro, int64_t cys,
                 Out<float> out, int threads) {
  check_clash_inputs(pos, rows, nbr, adjacent, restype, slot_mask);
  const int64_t M = rows.shape(0);
  require(cand.ndim() == 4 && cand.shape(1) == size_t(M) && cand.shape(2) == kSlots && cand.shape(3) == 3,
          "clash_score: cand must be [C, M, 14, 3]");
  const int64_t Cn = cand.shape(0);
  require(out.ndim() == 2 && out.shape(0) == size_t(Cn) && out.shape(1) == size_t(M), "clash_score: out shape");
  const ClashArgs a{pos.data(), nbr.data(), adjacent.data(), restype.data(), slot_mask.data(),
                    int64_t(pos.shape(0)), int64_t(nbr.shape(1)), pro, cys};
  const int64_t* rp = rows.data();
  const float* cp = cand.data();
  float* op = out.data();
#pragma omp parallel num_threads(threads)
  {
    std::vector<Atoms> mine(static_cast<size_t>(Cn));
    std::vector<double> acc(static_cast<size_t>(Cn));
    Atoms other;
#pragma omp for schedule(dynamic, 8)
    for (int64_t m = 0; m < M; ++m) {
      const int64_t r = rp[m], rt_i = a.restype[r];
      for (int64_t ci = 0; ci < Cn; ++ci) {
        gather_atoms(mine[size_t(ci)], cp + (ci * M + m) * kSlots * 3, a.exists + rt_i * kSlots,
                     [](int s) { return s >= kFirstSideChainSlot; });
        acc[size_t(ci)] = 0.0;
      }
      for (int64_t j = 0; j < a.k; ++j) {
        const int64_t q = a.nbr[r * a.k + j], rt_j = a.restype[q];
        const bool adj = a.adjacent[r * a.k + j] != 0;
        gather_atoms(other, a.pos + q * kSlots * 3, a.exists + rt_j * kSlots, [](int) { return true; });
        for (int64_t ci = 0; ci < Cn; ++ci) {
          const Atoms& u = mine[size_t(ci)];
          if (far_apart(u, other, contact)) continue;
          double s = 0.0;
          for (int x = 0; x < u.count; ++x)
            for (int y = 0; y < other.count; ++y) {
              if (!pair_counts(a, rt_i, u.slot[x], rt_j, other.slot[y], adj)) continue;
              const Vec3 d = ldb::sub(u.p[x], other.p[y]);
              const float t = contact - std::sqrt(ldb::dot(d, d));
              if (t > 0.f) s += double(t * t);
            }
          acc[size_t(ci)] += s;
        }
      }
      for (int64_t ci = 0; ci < Cn; ++ci) op[ci * M + m] = float(acc[size_t(ci)]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// message_mean: the per-edge part of a message-passing layer (model.networks.MPLayer) in one pass per row:
// out[r] = (Σ_j silu(node_j[b, nbr[r, j]] + node_i[r] + edge[r, j])) / k, silu(x) = x / (1 + exp(−x)). Instead
// of torch's gather, two adds, SiLU and mean over [B, L, k, D] temporaries, each edge row is read once.

#ifdef LDB_HAVE_LIBMVEC
extern "C" __m256 _ZGVdN8v_expf(__m256);
extern "C" __m512 _ZGVeN16v_expf(__m512);
const bool kHaveAvx512 = __builtin_cpu_supports("avx512f");

// The same, 16 lanes wide (AVX-512, libmvec's 16-wide expf), for the first multiple-of-16 channels.
__attribute__((target("avx512f"))) int64_t silu_accumulate_avx512(const float* x, float* acc, int64_t n) {
  int64_t i = 0;
  const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 s = _mm512_div_ps(v, _mm512_add_ps(one, _ZGVeN16v_expf(_mm512_sub_ps(zero, v))));
    _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), s));
  }
  return i;
}

// acc[c] += x[c] / (1 + exp(−x[c])) for the first multiple-of-8 channels, 8 lanes wide (AVX2, libmvec's expf);
// returns how many. CPUs without AVX2 take the scalar loop of silu_accumulate (same function, slower).
__attribute__((target("avx2"))) int64_t silu_accumulate_avx2(const float* x, float* acc, int64_t n) {
  int64_t i = 0;
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, _ZGVdN8v_expf(_mm256_sub_ps(zero, v))));
    _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), s));
  }
  return i;
}
#endif

inline void silu_accumulate(const float* x, float* acc, int64_t n) {
  int64_t i = 0;
#ifdef LDB_HAVE_LIBMVEC
  if (kHaveAvx512) i = silu_accumulate_avx512(x, acc, n);
  if (kHaveAvx2) i += silu_accumulate_avx2(x + i, acc + i, n - i);
#endif
  for (; i < n; ++i) acc[i] += x[i] / (1.0f + std::exp(-x[i]));
}

// One row r of message_mean: out[c] = (Σ_j silu((frame_nodes[nbr[j]] + own) + term_j))[c] / k, with term [k, D]
// the row's per-edge terms; pre and acc are [D] scratch.
inline void silu_mean_row(const float* frame_nodes, const int64_t* nbr, const float* own, const float* term,
                          int64_t k, int64_t D, float* pre, float* acc, float* out) {
  std::fill(acc, acc + D, 0.0f);
  for (int64_t j = 0; j < k; ++j) {
    const float* src = frame_nodes + nbr[j] * D;
    const float* t = term + j * D;
    for (int64_t c = 0; c < D; ++c) pre[c] = (src[c] + own[c]) + t[c];
    silu_accumulate(pre, acc, D);
  }
  const float kf = float(k);
  for (int64_t c = 0; c < D; ++c) out[c] = acc[c] / kf;
}

void message_mean(In<float> node_j, In<float> node_i, In<float> edge, In<int64_t> nbr, Out<float> out, int threads) {
  require(node_j.ndim() == 3 && node_i.ndim() == 3 && out.ndim() == 3 && edge.ndim() == 4 && nbr.ndim() == 3,
          "message_mean: node_j, node_i, out must be [B, L, D], edge [B, L, k, D], nbr [B, L, k]");
  const int64_t B = node_j.shape(0), L = node_j.shape(1), D = node_j.shape(2), k = nbr.shape(2);
  for (size_t i = 0; i < 3; ++i)
    require(node_i.shape(i) == node_j.shape(i) && out.shape(i) == node_j.shape(i),
            "message_mean: node_i and out must have node_j's shape");
  require(nbr.shape(0) == size_t(B) && nbr.shape(1) == size_t(L), "message_mean: nbr must be [B, L, k]");
  require(edge.shape(0) == size_t(B) && edge.shape(1) == size_t(L) && edge.shape(2) == size_t(k) &&
              edge.shape(3) == size_t(D), "message_mean: edge must be [B, L, k, D]");
  check_range(nbr.data(), nbr.size(), L, "message_mean: nbr");
  const float* nj = node_j.data();
  const float* ni = node_i.data();
  const float* ed = edge.data();
  const int64_t* nb_ = nbr.data();
  float* op = out.data();
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> pre(static_cast<size_t>(D)), acc(static_cast<size_t>(D));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * L; ++r)
      silu_mean_row(nj + (r / L) * L * D, nb_ + r * k, ni + r * D, ed + r * k * D, k, D, pre.data(), acc.data(),
                    op + r * D);
  }
}

// message_mean_proj: message_mean whose per-edge term is the projection W·e_ij of the layer's edge features
// (model.networks.MPLayer: edge = linear(e, W)), computed per edge in registers instead of written as a
// [B, L, k, D] tensor and read back: out[r] = (Σ_j silu((node_j[b, nbr[r, j]] + node_i[r]) + p_rj)) / k with
// p_rj[c] = Σ_q e[r, j, q]·wt[q, c], accumulated in float32 in q order from 0 (wt = Wᵀ, [E, D]). Four edges of a
// row share each load of wt, over blocks of 64 channels. (Measured alone, 64 frames × 135 residues × 16
// neighbours, E = 32, D = 64: 25 ms for torch's linear then message_mean, 15 ms fused; 4 × 16 channels: 170 ms.)
LDB_CLONES __attribute__((optimize("fp-contract=fast"))) static void edge_projection(const float* e, int64_t n_edges, const float* wt, int64_t E, int64_t D,
                                       float* proj) {
  constexpr int64_t G = 4, W = 64;
  for (int64_t g0 = 0; g0 < n_edges; g0 += G) {
    const int64_t gn = std::min(G, n_edges - g0);
    for (int64_t c0 = 0; c0 < D; c0 += W) {
      const int64_t cw = std::min(W, D - c0);
      float acc[G][W];
      for (int64_t g = 0; g < G; ++g)
        for (int64_t c = 0; c < W; ++c) acc[g][c] = 0.f;
      if (gn == G && cw == W) {  // constant trip counts: the accumulators stay in registers
        for (int64_t q = 0; q < E; ++q) {
          const float* w = wt + q * D + c0;
          for (int64_t g = 0; g < G; ++g) {
            const float eq = e[(g0 + g) * E + q];
            for (int64_t c = 0; c < W; ++c) acc[g][c] += eq * w[c];
          }
        }
      } else {
        for (int64_t q = 0; q < E; ++q) {
          const float* w = wt + q * D + c0;
          for (int64_t g = 0; g < gn; ++g) {
            const float eq = e[(g0 + g) * E + q];
            for (int64_t c = 0; c < cw; ++c) acc[g][c] += eq * w[c];
          }
        }
      }
      for (int64_t g = 0; g < gn; ++g)
        for (int64_t c = 0; c < cw; ++c) proj[(g0 + g) * D + c0 + c] = acc[g][c];
    }
  }
}

void message_mean_proj(In<float> node_j, In<float> node_i, In<float> edge, In<float> weight_t, In<int64_t> nbr,
                       Out<float> out, int threads) {
  require(node_j.ndim() == 3 && node_i.ndim() == 3 && out.ndim() == 3 && edge.ndim() == 4 && nbr.ndim() == 3 &&
              weight_t.ndim() == 2,
          "message_mean_proj: node_j, node_i, out must be [B, L, D], edge [B, L, k, E], weight_t [E, D], "
          "nbr [B, L, k]");
  const int64_t B = node_j.shape(0), L = node_j.shape(1), D = node_j.shape(2), k = nbr.shape(2);
  const int64_t E = edge.shape(3);
  for (size_t i = 0; i < 3; ++i)
    require(node_i.shape(i) == node_j.shape(i) && out.shape(i) == node_j.shape(i),
            "message_mean_proj: node_i and out must have node_j's shape");
  require(nbr.shape(0) == size_t(B) && nbr.shape(1) == size_t(L), "message_mean_proj: nbr must be [B, L, k]");
  require(edge.shape(0) == size_t(B) && edge.shape(1) == size_t(L) && edge.shape(2) == size_t(k),
          "message_mean_proj: edge must be [B, L, k, E]");
  require(weight_t.shape(0) == size_t(E) && weight_t.shape(1) == size_t(D), "message_mean_proj: weight_t must be [E, D]");
  check_range(nbr.data(), nbr.size(), L, "message_mean_proj: nbr");
  const float* nj = node_j.data();
  const float* ni = node_i.data();
  const float* ed = edge.data();
  const float* wt = weight_t.data();
  const int64_t* nb_ = nbr.data();
  float* op = out.data();
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> proj(static_cast<size_t>(k * D)), pre(static_cast<size_t>(D)), acc(static_cast<size_t>(D));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * L; ++r) {
      edge_projection(ed + r * k * E, k, wt, E, D, proj.data());
      silu_mean_row(nj + (r / L) * L * D, nb_ + r * k, ni + r * D, proj.data(), k, D, pre.data(), acc.data(),
                    op + r * D);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// knn: the k nearest other points of every point of a frame (model.features.knn: the CA graph; model.packing: the
// side-chain graph), nearest first, by the squared distance (dx² + dy²) + dz² in float32, ties to the lower
// index. Insertion into a sorted list of k per row, one pass over the frame: no [B, L, L] distance matrix.
// Squared distances d[j] = (dx² + dy²) + dz² from point i of a frame held as x[L], y[L], z[L].
LDB_CLONES static void knn_distances(const float* xs, int64_t L, int64_t i, float* d) {
  const float* x = xs;
  const float* y = xs + L;
  const float* z = xs + 2 * L;
  const float px = x[i], py = y[i], pz = z[i];
  for (int64_t j = 0; j < L; ++j) {
    const float dx = x[j] - px, dy = y[j] - py, dz = z[j] - pz;
    d[j] = (dx * dx + dy * dy) + dz * dz;
  }
}

void knn(In<float> points, Out<int64_t> out, int threads) {
  require(points.ndim() == 3 && points.shape(2) == 3, "knn: points must be [B, L, 3]");
  const int64_t B = points.shape(0), L = points.shape(1);
  require(out.ndim() == 3 && out.shape(0) == size_t(B) && out.shape(1) == size_t(L), "knn: out must be [B, L, k]");
  const int64_t k = out.shape(2);
  require(k <= std::max<int64_t>(L - 1, 0), "knn: k must be at most L - 1");
  const float* pts = points.data();
  int64_t* op = out.data();
  if (k == 0) return;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> bd(static_cast<size_t>(k)), d(static_cast<size_t>(L)), xs(static_cast<size_t>(3 * L));
    std::vector<int64_t> bi(static_cast<size_t>(k));
    int64_t loaded = -1;  // the frame whose coordinates xs holds, as x[L], y[L], z[L]
#pragma omp for schedule(static)
    for (int64_t r = 0; r < B * L; ++r) {
      const int64_t i = r % L, f = r / L;
      if (f != loaded) {
        for (int64_t j = 0; j < L; ++j)
          for (int64_t c = 0; c < 3; ++c) xs[size_t(c * L + j)] = pts[(f * L + j) * 3 + c];
        loaded = f;
      }
      knn_distances(xs.data(), L, i, d.data());
      int64_t n = 0;
      for (int64_t j = 0; j < L; ++j) {
        const float dj = d[size_t(j)];
        if (j == i || (n == k && !(dj < bd[size_t(k - 1)]))) continue;  // an equal one keeps its place
        int64_t pos = n < k ? n++ : k - 1;
        for (; pos > 0 && bd[size_t(pos - 1)] > dj; --pos) {
          bd[size_t(pos)] = bd[size_t(pos - 1)];
          bi[size_t(pos)] = bi[size_t(pos - 1)];
        }
        bd[size_t(pos)] = dj;
        bi[size_t(pos)] = j;
      }
      std::copy(bi.begin(), bi.end(), op + r * k);
    }
  }
}

}  // namespace

NB_MODULE(_cpu, m) {
  m.doc() = "C++/OpenMP CPU kernels of ldb_hpc.ops (contract: ldb_hpc/ops/reference.py).";
  auto rel = nb::call_guard<nb::gil_scoped_release>();
  m.def("vq_nearest", &vq_nearest, nb::arg("z").noconvert(), nb::arg("codebook").noconvert(),
        nb::arg("index").noconvert(), nb::arg("quantized").noconvert(), nb::arg("threads"), rel,
        "z [N, d], codebook [K, d] float32 → fills index [N] int64 and quantized [N, d].");
  m.def("gaussian_noise", &gaussian_noise, nb::arg("seed"), nb::arg("frame_ids").noconvert(), nb::arg("samples"),
        nb::arg("step"), nb::arg("n_res"), nb::arg("dim"), nb::arg("out").noconvert(), nb::arg("threads"), rel,
        "Fills out [B, S, L, D] float32 with the counter-based normals of ldb_hpc.ops.noise.");
  m.def("diffusion_step", &diffusion_step, nb::arg("x_t").noconvert(), nb::arg("eps").noconvert(), nb::arg("c0"),
        nb::arg("c1"), nb::arg("c2"), nb::arg("c3"), nb::arg("c4"), nb::arg("seed"), nb::arg("step"),
        nb::arg("frame_ids").noconvert(), nb::arg("out").noconvert(), nb::arg("threads"), rel,
        "One DDIM update of x_t [B, S, L, D] with coefficients (c0..c4) into out.");
  m.def("build_atoms", &build_atoms, nb::arg("n").noconvert(), nb::arg("ca").noconvert(), nb::arg("c").noconvert(),
        nb::arg("o_torsion").noconvert(), nb::arg("chi").noconvert(), nb::arg("restype").noconvert(),
        nb::arg("bond").noconvert(), nb::arg("angle").noconvert(), nb::arg("offset").noconvert(),
        nb::arg("zm_refs").noconvert(), nb::arg("zm_torsion").noconvert(), nb::arg("zm_mask").noconvert(),
        nb::arg("slot_mask").noconvert(), nb::arg("pro"), nb::arg("pro_chi1_delta").noconvert(),
        nb::arg("pro_chi2_grid").noconvert(), nb::arg("pro_cd_n_length"), nb::arg("pro_tie_weight"),
        nb::arg("out").noconvert(), nb::arg("threads"), rel,
        "Atom14 [M, 14, 3] Å of residue rows from N, CA, C [M, 3], O torsion [M] and χ [M, 4] (rad).");
  m.def("clash_flags", &clash_flags, nb::arg("pos").noconvert(), nb::arg("rows").noconvert(),
        nb::arg("nbr").noconvert(), nb::arg("adjacent").noconvert(), nb::arg("restype").noconvert(),
        nb::arg("trigger"), nb::arg("slot_mask").noconvert(), nb::arg("pro"), nb::arg("cys"),
        nb::arg("out").noconvert(), nb::arg("threads"), rel,
        "out [M] uint8: whether row rows[m] has a counted pair closer than trigger Å to a neighbour.");
  m.def("clash_score", &clash_score, nb::arg("cand").noconvert(), nb::arg("pos").noconvert(),
        nb::arg("rows").noconvert(), nb::arg("nbr").noconvert(), nb::arg("adjacent").noconvert(),
        nb::arg("restype").noconvert(), nb::arg("contact"), nb::arg("slot_mask").noconvert(), nb::arg("pro"),
        nb::arg("cys"), nb::arg("out").noconvert(), nb::arg("threads"), rel,
        "out [C, M] float32: Σ relu(contact − d)² over counted pairs of candidate side chains.");
  m.def("message_mean", &message_mean, nb::arg("node_j").noconvert(), nb::arg("node_i").noconvert(),
        nb::arg("edge").noconvert(), nb::arg("nbr").noconvert(), nb::arg("out").noconvert(), nb::arg("threads"),
        rel, "out [B, L, D] float32: mean over k of silu(node_j[b, nbr] + node_i + edge), edge [B, L, k, D].");
  m.def("knn", &knn, nb::arg("points").noconvert(), nb::arg("out").noconvert(), nb::arg("threads"), rel,
        "Fills out [B, L, k] int64 with the k nearest other points of each of points [B, L, 3] float32.");
  m.def("message_mean_proj", &message_mean_proj, nb::arg("node_j").noconvert(), nb::arg("node_i").noconvert(),
        nb::arg("edge").noconvert(), nb::arg("weight_t").noconvert(), nb::arg("nbr").noconvert(),
        nb::arg("out").noconvert(), nb::arg("threads"), rel,
        "out [B, L, D] float32: message_mean with edge [B, L, k, E] projected per edge by weight_t [E, D].");
}

// Float32 geometry helpers of the CPU kernels, written to follow the torch reference
// (ldb_hpc/geometry/frames.py, ldb_hpc/geometry/builder.py) operation by operation, so that the
// results agree with it to float32 rounding. Å and radians.
#pragma once

#include <cmath>

namespace ldb {

struct Vec3 {
  float x, y, z;
};

inline Vec3 sub(Vec3 a, Vec3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
inline Vec3 scale(Vec3 a, float s) { return {a.x * s, a.y * s, a.z * s}; }
inline float dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
inline Vec3 cross(Vec3 a, Vec3 b) {
  return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x};
}
inline Vec3 load(const float* p) { return {p[0], p[1], p[2]}; }
inline void store(float* p, Vec3 v) { p[0] = v.x; p[1] = v.y; p[2] = v.z; }

// geometry.vectors.safe_norm: sqrt(max(|v|², 1e-24)).
inline float safe_norm(Vec3 v) {
  const float s = dot(v, v);
  return std::sqrt(s < 1e-24f ? 1e-24f : s);
}

// Orthonormal basis with columns ex, ey, ez (frames.basis_from_two_vectors, fallbacks included).
struct Basis {
  Vec3 ex, ey, ez;
  Vec3 apply(Vec3 l) const {  // R @ l
    return {ex.x * l.x + ey.x * l.y + ez.x * l.z, ex.y * l.x + ey.y * l.y + ez.y * l.z,
            ex.z * l.x + ey.z * l.y + ez.z * l.z};
  }
  Vec3 apply_t(Vec3 g) const { return {dot(ex, g), dot(ey, g), dot(ez, g)}; }  // Rᵀ @ g
};

inline Basis basis_from_two_vectors(Vec3 x_vec, Vec3 y_hint) {
  const float xn = safe_norm(x_vec);
  Vec3 ex = xn > 1e-6f ? Vec3{x_vec.x / xn, x_vec.y / xn, x_vec.z / xn} : Vec3{1.f, 0.f, 0.f};
  const float hx = dot(y_hint, ex);
  Vec3 y = sub(y_hint, scale(ex, hx));
  const float yn = safe_norm(y);
  const float hint_n = safe_norm(y_hint);
  if (yn <= 1e-3f * hint_n || hint_n < 1e-6f) {
    // The global axis least aligned with ex (first of equal |components|, as torch.argmin).
    const float ax = std::fabs(ex.x), ay = std::fabs(ex.y), az = std::fabs(ex.z);
    int k = 0;
    float m = ax;
    if (ay < m) { k = 1; m = ay; }
    if (az < m) { k = 2; }
    const Vec3 axis = {k == 0 ? 1.f : 0.f, k == 1 ? 1.f : 0.f, k == 2 ? 1.f : 0.f};
    y = sub(axis, scale(ex, dot(axis, ex)));
  }
  const float n = safe_norm(y);
  const Vec3 ey = {y.x / n, y.y / n, y.z / n};
  return {ex, ey, cross(ex, ey)};
}

// builder.nerf: x with |x − c| = bond, angle(b, c, x) = angle, dihedral(a, b, c, x) = torsion, from the
// local vector (−bond·cos angle, bond·sin angle·cos torsion, bond·sin angle·sin torsion).
inline Vec3 nerf_local(float bond, float angle, float torsion) {
  const float sin_a = std::sin(angle);
  return {-bond * std::cos(angle), bond * sin_a * std::cos(torsion), bond * sin_a * std::sin(torsion)};
}

inline Vec3 add(Vec3 a, Vec3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }

inline Vec3 nerf(Vec3 a, Vec3 b, Vec3 c, float bond, float angle, float torsion) {
  const Basis R = basis_from_two_vectors(sub(c, b), sub(a, b));
  return add(c, R.apply(nerf_local(bond, angle, torsion)));
}

}  // namespace ldb

//! The gated delta recurrence as one Metal kernel over all tokens of a call,
//! the Metal twin of `kernels::cuda::delta`'s (mlx-lm runs its own Metal kernel here;
//! Hearth's MLX-ops path is a dozen launches per token and layer). One
//! simdgroup per (batch, value head, value row): lane i keeps `Dk / 32`
//! entries of that state row, so the two dot products per token (S k, S q)
//! are `simd_sum`s. The state stays in float32; q, k, v and y are in the
//! model's type.
//!
//! Off by default (`kernels::metal::metal_kernels_on`): it type-checks here (the
//! macOS check) but has not run on a Mac; `tests` below compare it with the
//! ops recurrence wherever it is on.

use crate::models::kernels::cuda::delta::launch_recurrence;
use crate::models::kernels::metal::{metal_kernels_on, Kernel};
use crate::error::{Error, Result};
use mlx_rs::Array;

/// q, k [B, T, Hk, Dk]; v [B, T, Hv, Dv]; g (decay, not its log), beta
/// [B, T, Hv] float32; state_in [B, Hv, Dv, Dk] float32. Grid (32, Dv, B*Hv)
/// threads in threadgroups of (32, 4, 1): x runs fastest, so each simdgroup
/// of 32 is one state row.
const SOURCE: &str = r#"
  constexpr int NPT = Dk / 32;
  const int T = q_shape[1];
  const uint lane = thread_position_in_grid.x;
  const int dv_idx = thread_position_in_grid.y;
  const int n = thread_position_in_grid.z;
  const int b_idx = n / Hv;
  const int hv_idx = n % Hv;
  const int hk_idx = hv_idx / (Hv / Hk);
  const device InT* q_ = q + (size_t)b_idx * T * Hk * Dk + hk_idx * Dk + NPT * lane;
  const device InT* k_ = k + (size_t)b_idx * T * Hk * Dk + hk_idx * Dk + NPT * lane;
  const device InT* v_ = v + (size_t)b_idx * T * Hv * Dv + hv_idx * Dv + dv_idx;
  device InT* y_ = y + (size_t)b_idx * T * Hv * Dv + hv_idx * Dv + dv_idx;
  const device float* g_ = g + (size_t)b_idx * T * Hv + hv_idx;
  const device float* beta_ = beta + (size_t)b_idx * T * Hv + hv_idx;
  const size_t row = ((size_t)n * Dv + dv_idx) * Dk + NPT * lane;
  float st[NPT];
  for (int i = 0; i < NPT; ++i) st[i] = state_in[row + i];
  for (int t = 0; t < T; ++t) {
    const float gt = g_[(size_t)t * Hv];
    float kk[NPT];
    float kv = 0.f;
    for (int i = 0; i < NPT; ++i) {
      kk[i] = static_cast<float>(k_[(size_t)t * Hk * Dk + i]);
      st[i] *= gt;
      kv += st[i] * kk[i];
    }
    kv = simd_sum(kv);
    const float delta = (static_cast<float>(v_[(size_t)t * Hv * Dv]) - kv) * beta_[(size_t)t * Hv];
    float out = 0.f;
    for (int i = 0; i < NPT; ++i) {
      st[i] += kk[i] * delta;
      out += st[i] * static_cast<float>(q_[(size_t)t * Hk * Dk + i]);
    }
    out = simd_sum(out);
    if (lane == 0) y_[(size_t)t * Hv * Dv] = static_cast<InT>(out);
  }
  for (int i = 0; i < NPT; ++i) state_out[row + i] = st[i];
"#;

thread_local! {
    static KERNEL: Option<Kernel> =
        Kernel::new("hearth_gated_delta_metal", &["q", "k", "v", "g", "beta", "state_in"], &["y", "state_out"], SOURCE, "").ok();
}

/// The recurrence on Metal when the Metal kernels are on and the shapes fit
/// (`kernels::cuda::delta::launch_recurrence`, the same launch as CUDA's); None
/// otherwise, and the caller runs its MLX ops.
pub fn run(q: &Array, k: &Array, v: &Array, g_log: &Array, beta: &Array, state: &Array) -> Result<Option<(Array, Array)>> {
    if !metal_kernels_on() {
        return Ok(None);
    }
    launch_recurrence(q, k, v, g_log, beta, state, |l| {
        KERNEL.with(|kernel| kernel.as_ref().ok_or_else(|| Error::Mlx("the Metal gated delta kernel could not be built".into()))?.apply(l))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nn::gated_delta::recurrent;
    use mlx_rs::random;

    /// Where the Metal kernels are on (a Mac with HEARTH_METAL_KERNELS=1) the
    /// kernel agrees with the ops recurrence; elsewhere it stays out of the way.
    #[test]
    fn metal_recurrence_matches_the_ops_or_stays_off() {
        let (b, t, hk, hv, dk, dv) = (1, 5, 2, 4, 64, 16);
        let r = |seed: u64, shape: &[i32], s: f32| {
            random::normal::<f32>(shape, None, None, &random::key(seed).unwrap()).unwrap().multiply(mlx_rs::array!(s)).unwrap()
        };
        let (q, k, v) = (r(1, &[b, t, hk, dk], 0.2), r(2, &[b, t, hk, dk], 0.2), r(3, &[b, t, hv, dv], 1.0));
        let g_log = r(4, &[b, t, hv], 0.1).abs().unwrap().negative().unwrap();
        let beta = mlx_rs::ops::sigmoid(r(5, &[b, t, hv], 1.0)).unwrap();
        let state = r(6, &[b, hv, dv, dk], 0.1);
        let got = run(&q, &k, &v, &g_log, &beta, &state).unwrap();
        if !metal_kernels_on() {
            assert!(got.is_none(), "the Metal kernel ran where it is off");
            return;
        }
        let (y, s) = got.expect("on and the shapes fit");
        let (y0, s0) = recurrent(&q, &k, &v, &g_log, &beta, &state).unwrap();
        let close = |a: &Array, b: &Array| a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
        assert!(close(&y, &y0) < 1e-4, "y differs by {}", close(&y, &y0));
        assert!(close(&s, &s0) < 1e-4, "state differs by {}", close(&s, &s0));
    }
}

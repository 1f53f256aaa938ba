//! The CUDA backend of the forward pass (`--features cuda`).
//!
//! cudarc loads the driver, NVRTC and cuBLAS at run time (`dynamic-loading`), so building needs
//! no CUDA toolkit and a binary built with the feature still runs, on the CPU, where there is
//! none. cudarc panics when a library is missing, so [`Engine::new`] first probes with dlopen
//! and then runs the set-up under `catch_unwind`: a missing driver or GPU is an error, never a
//! panic.
//!
//! - `kernels.cu`: the kernels (per-type dequantize and fused GEMV, RMSNorm, rotary,
//!   attention, SwiGLU, MoE gather/scatter), compiled with NVRTC for the GPU at start-up.
//! - [`gpu`]: context, stream, cuBLAS and compiled kernels, with thin typed launchers.
//! - [`engine`]: the forward pass on the GPU: weights (resident or streamed), KV cache.
//!
//! Without the feature, this module is a stub whose [`Engine::new`] says so.

#[cfg(feature = "cuda")]
mod engine;
#[cfg(feature = "cuda")]
mod gpu;

#[cfg(feature = "cuda")]
pub use engine::Engine;
#[cfg(feature = "cuda")]
pub use gpu::{compile_kernels, nvrtc_present};

/// The kernel source, compiled at run time by NVRTC.
pub const KERNELS_CU: &str = include_str!("kernels.cu");

/// Whether a CUDA GPU can be used (the driver loads and reports a device); never panics.
pub fn available() -> bool {
    #[cfg(feature = "cuda")]
    {
        gpu::probe().is_ok()
    }
    #[cfg(not(feature = "cuda"))]
    false
}

/// The build without the feature: every attempt to use the GPU is one clear error.
#[cfg(not(feature = "cuda"))]
pub struct Engine(std::convert::Infallible);

#[cfg(not(feature = "cuda"))]
impl Engine {
    pub fn new(_: &dyn crate::model::Weights, _: bool) -> anyhow::Result<Self> {
        anyhow::bail!(
            "this llmjp-convert was built without CUDA support (rebuild with --features cuda)"
        )
    }

    pub fn forward(
        &mut self,
        _: &dyn crate::model::Weights,
        _: &crate::model::ops::Rope,
        _: &[u32],
        _: crate::model::Logits,
        _: usize,
    ) -> anyhow::Result<Vec<f32>> {
        match self.0 {}
    }

    pub fn describe(&self) -> String {
        match self.0 {}
    }
}

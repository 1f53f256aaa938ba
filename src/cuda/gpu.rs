//! The GPU itself: probing for the driver without panicking, the context and stream, NVRTC
//! compilation of `kernels.cu`, cuBLAS SGEMM, and kernel launches over raw device pointers
//! (every buffer lives on one stream, so no cross-stream tracking is needed).

use super::KERNELS_CU;
use anyhow::{Context, Result, anyhow, bail, ensure};
use cudarc::cublas::{self, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{self, Ptx};
use std::collections::HashMap;
use std::ffi::CString;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};

/// Runs `f`, turning a panic inside cudarc (a library or symbol it could not load) into an
/// error, with the panic message silenced so the CLI prints one `error:` line.
pub(crate) fn guard<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    thread_local! {
        static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    // Nested inside another guard (kernel compilation inside set-up): the outer one catches,
    // and taking the (non-reentrant) lock again would deadlock.
    if DEPTH.with(|d| d.get()) > 0 {
        return f().with_context(|| what.to_string());
    }
    static HOOK: Mutex<()> = Mutex::new(());
    let _lock = HOOK.lock().unwrap_or_else(|e| e.into_inner());
    DEPTH.with(|d| d.set(d.get() + 1));
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    let _leave = Leave;
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    match r {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            bail!("{what}: {}", msg.lines().next().unwrap_or(""))
        }
    }
}

/// Whether the CUDA driver library loads and reports at least one device (checked once).
pub fn probe() -> Result<()> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: only dlopens candidate library names.
            if !unsafe { cudarc::driver::sys::is_culib_present() } {
                return Err("no CUDA driver found (libcuda.so could not be loaded)".into());
            }
            guard("CUDA driver", || {
                cudarc::driver::result::init().map_err(|e| anyhow!("cuInit failed: {e:?}"))?;
                let n = CudaContext::device_count()?;
                ensure!(n > 0, "no CUDA device");
                Ok(())
            })
            .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!("CUDA is not available: {e}"))
}

/// Whether libnvrtc can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only dlopens candidate library names.
    unsafe { nvrtc::sys::is_culib_present() }
}

/// Compiles `kernels.cu` with NVRTC to a CUBIN for compute capability `cc` (no PTX JIT by the
/// driver, so an NVRTC newer than the driver still works). Needs libnvrtc, not a GPU.
pub fn compile_kernels(cc: (i32, i32)) -> Result<Ptx> {
    ensure!(
        nvrtc_present(),
        "NVRTC not found (libnvrtc.so; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH)"
    );
    guard("NVRTC", || {
        let src = CString::new(KERNELS_CU)?;
        let name = CString::new("kernels.cu")?;
        let prog = nvrtc::result::create_program(&src, Some(&name))?;
        let opts = [
            format!("--gpu-architecture=sm_{}{}", cc.0, cc.1),
            "--std=c++14".to_string(),
        ];
        // SAFETY: prog is a live program; it is destroyed on every path below.
        let out = unsafe {
            match nvrtc::result::compile_program(prog, &opts) {
                Err(e) => {
                    let log = nvrtc::result::get_program_log(prog)
                        .map(|l| {
                            let b: Vec<u8> = l.iter().map(|&c| c as u8).collect();
                            String::from_utf8_lossy(&b)
                                .trim_end_matches('\0')
                                .to_string()
                        })
                        .unwrap_or_default();
                    Err(anyhow!("{e:?}: {}", log.replace('\n', " | ")))
                }
                Ok(()) => {
                    let mut size = 0usize;
                    nvrtc::sys::nvrtcGetCUBINSize(prog, &mut size).result()?;
                    let mut buf = vec![0u8; size];
                    nvrtc::sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut _).result()?;
                    Ok(buf)
                }
            }
        };
        // SAFETY: as above.
        unsafe { nvrtc::result::destroy_program(prog) }?;
        Ok(Ptx::from_binary(out.context("compiling kernels.cu")?))
    })
}

/// A kernel argument: device pointers travel as u64 (the kernels take them as `T*`).
#[derive(Clone, Copy)]
pub enum Arg {
    P(u64),
    I(i32),
    L(i64),
    F(f32),
}

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    blas: CudaBlas,
    funcs: HashMap<&'static str, CudaFunction>,
    pub name: String,
}

/// Every kernel in kernels.cu.
const KERNELS: &[&str] = &[
    "rms_norm",
    "rope",
    "attention",
    "swiglu",
    "add",
    "gather_rows",
    "scatter_add",
];
/// Suffixes of the per-type `dequant_*` / `gemv_*` kernels.
pub const TYPES: &[&str] = &[
    "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k",
    "q6_k",
];

impl Gpu {
    /// Device 0, its kernels compiled and loaded, and a cuBLAS handle on its stream.
    pub fn new() -> Result<Self> {
        probe()?;
        // SAFETY: only dlopens candidate library names.
        ensure!(
            unsafe { cublas::sys::is_culib_present() },
            "CUDA is not available: cuBLAS not found (libcublas.so)"
        );
        guard("CUDA set-up", || {
            let ctx = CudaContext::new(0)?;
            // One stream: the driver orders everything; cudarc's event tracking is not needed.
            // SAFETY: no buffer is ever used on another stream.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx.default_stream();
            let cc = ctx.compute_capability()?;
            let module = ctx.load_module(compile_kernels(cc)?)?;
            let mut funcs = HashMap::new();
            let typed: Vec<&'static str> = TYPES
                .iter()
                .flat_map(|t| {
                    [
                        &*format!("dequant_{t}").leak(),
                        &*format!("gemv_{t}").leak(),
                    ]
                })
                .collect();
            for &k in KERNELS.iter().chain(&typed) {
                funcs.insert(k, module.load_function(k).with_context(|| k.to_string())?);
            }
            let blas = CudaBlas::new(stream.clone())?;
            // Plain f32 SGEMM (no TF32 tensor cores): results must agree with the CPU's f32.
            // SAFETY: a live handle.
            unsafe {
                cublas::sys::cublasSetMathMode(
                    *blas.handle(),
                    cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
                )
                .result()?;
            }
            let name = format!("{} (sm_{}{})", ctx.name()?, cc.0, cc.1);
            Ok(Self {
                ctx,
                stream,
                blas,
                funcs,
                name,
            })
        })
    }

    /// Free and total device memory in bytes.
    pub fn mem(&self) -> Result<(usize, usize)> {
        Ok(self.ctx.mem_get_info()?)
    }

    pub fn ptr<T>(&self, s: &CudaSlice<T>) -> u64 {
        s.device_ptr(&self.stream).0
    }

    pub fn alloc<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros::<T>(n.max(1))?)
    }

    pub fn upload<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        Ok(self.stream.clone_htod(v)?)
    }

    /// Copies `n` floats from device address `src` to host.
    pub fn download(&self, src: u64, n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; n];
        // SAFETY: src holds n floats written by this stream; the stream is synchronised first.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(&mut out, src, self.stream.cu_stream())?;
        }
        self.stream.synchronize()?;
        Ok(out)
    }

    /// Copies `n` floats from host to device address `dst`.
    pub fn write(&self, dst: u64, src: &[f32]) -> Result<()> {
        // SAFETY: dst holds at least src.len() floats (the callers size their buffers).
        unsafe {
            cudarc::driver::result::memcpy_htod_async(dst, src, self.stream.cu_stream())?;
        }
        Ok(())
    }

    /// Device-to-device copy of `n` floats.
    pub fn copy(&self, dst: u64, src: u64, n: usize) -> Result<()> {
        // SAFETY: both ranges hold n floats.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(dst, src, n * 4, self.stream.cu_stream())?;
        }
        Ok(())
    }

    pub fn zero(&self, dst: u64, n: usize) -> Result<()> {
        // SAFETY: dst holds n floats.
        unsafe {
            cudarc::driver::result::memset_d8_async(dst, 0, n * 4, self.stream.cu_stream())?;
        }
        Ok(())
    }

    /// Launches kernel `name` on `grid` blocks of `block` threads.
    pub fn launch(&self, name: &str, grid: u64, block: u32, args: &[Arg]) -> Result<()> {
        let f = self
            .funcs
            .get(name)
            .with_context(|| format!("no kernel {name}"))?;
        ensure!(grid > 0, "{name}: empty launch");
        let grid = u32::try_from(grid).with_context(|| format!("{name}: grid of {grid} blocks"))?;
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::P(v) => b.arg(v),
                Arg::I(v) => b.arg(v),
                Arg::L(v) => b.arg(v),
                Arg::F(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument lists match kernels.cu's signatures (engine.rs builds them),
        // and every pointer addresses a live buffer large enough for the launch.
        unsafe { b.launch(cfg) }.with_context(|| format!("launching {name}"))?;
        Ok(())
    }

    /// Row-major `y[n][rows] = x[n][cols] . w[rows][cols]^T` with cuBLAS SGEMM (f32 in, f32
    /// accumulate); `ldy` is y's row stride, so a block of weight rows writes its columns.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        &self,
        w: u64,
        rows: usize,
        cols: usize,
        x: u64,
        n: usize,
        y: u64,
        ldy: usize,
    ) -> Result<()> {
        let (alpha, beta) = (1f32, 0f32);
        let i = |v: usize| i32::try_from(v).context("matrix too large for cuBLAS");
        // Column-major view: C (rows x n, ld ldy) = A^T (A: cols x rows) * B (cols x n).
        // SAFETY: w holds rows * cols floats, x n * cols, y n * ldy.
        unsafe {
            cublas::result::sgemm(
                *self.blas.handle(),
                cublas::sys::cublasOperation_t::CUBLAS_OP_T,
                cublas::sys::cublasOperation_t::CUBLAS_OP_N,
                i(rows)?,
                i(n)?,
                i(cols)?,
                &alpha,
                w as *const f32,
                i(cols)?,
                x as *const f32,
                i(cols)?,
                &beta,
                y as *mut f32,
                i(ldy)?,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::guard;

    /// Guards nest (set-up compiles the kernels inside its own guard): no deadlock, and a
    /// panic in the inner one is caught by the outer one as an error.
    #[test]
    fn guards_nest() {
        let r: anyhow::Result<i32> = guard("outer", || guard("inner", || Ok(7)));
        assert_eq!(r.unwrap(), 7);
        let r: anyhow::Result<i32> = guard("outer", || guard("inner", || panic!("boom")));
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("outer") && e.contains("boom"), "{e}");
        // And the lock was released: a later guard runs.
        assert_eq!(guard("again", || Ok(1)).unwrap(), 1);
    }
}

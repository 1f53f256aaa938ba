//! The CUDA backend without a GPU: the kernels compile with NVRTC (when libnvrtc is found),
//! and `--device cuda` fails with one clear error line, never a panic, when there is no
//! CUDA support in the build or no driver. The GPU itself is checked by scripts/gpu-check.sh.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llmjp-convert"))
}

const TINY: &str = "fixtures/models/llmjp-jglue-tiny";

/// `--device cuda` exits 1 with a single `error:` line when CUDA cannot be used here.
#[test]
fn device_cuda_without_a_gpu_is_one_error_line() {
    if llmjp_convert::cuda::available() {
        eprintln!("skipped: a CUDA GPU is available here");
        return;
    }
    for args in [
        vec![
            "generate", TINY, "-p", "hello", "-n", "2", "--device", "cuda",
        ],
        vec!["verify", TINY, TINY, "--device", "cuda", "--no-hash", "-q"],
        vec![
            "verify",
            TINY,
            TINY,
            "--reference-device",
            "cuda",
            "--no-hash",
            "-q",
        ],
        vec![
            "bench",
            TINY,
            "--device",
            "cuda",
            "--prompt-tokens",
            "4",
            "--gen-tokens",
            "2",
        ],
    ] {
        let out = bin().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains("CUDA") || err.contains("cuda"),
            "{args:?}: {err}"
        );
    }
}

/// `--device auto` falls back to the CPU when CUDA cannot be used.
#[test]
fn device_auto_falls_back_to_the_cpu() {
    if llmjp_convert::cuda::available() {
        eprintln!("skipped: a CUDA GPU is available here");
        return;
    }
    let run = |dev: &str| {
        let out = bin()
            .args(["generate", TINY, "-p", "hello", "-n", "3", "--device", dev])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(run("auto"), run("cpu"));
}

/// kernels.cu compiles for sm_80 and sm_90 (needs libnvrtc, e.g. `pip install
/// nvidia-cuda-nvrtc` and its lib directory on LD_LIBRARY_PATH; skipped without it).
#[cfg(feature = "cuda")]
#[test]
fn kernels_compile_with_nvrtc() {
    if !llmjp_convert::cuda::nvrtc_present() {
        // CI installs NVRTC and sets this, so there the check cannot be skipped.
        assert!(
            std::env::var_os("LLMJP_REQUIRE_NVRTC").is_none(),
            "LLMJP_REQUIRE_NVRTC is set but libnvrtc cannot be loaded"
        );
        eprintln!("skipped: no libnvrtc");
        return;
    }
    for cc in [(8, 0), (9, 0)] {
        if let Err(e) = llmjp_convert::cuda::compile_kernels(cc) {
            panic!("sm_{}{}: {e:#}", cc.0, cc.1);
        }
    }
}

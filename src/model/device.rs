//! Where the forward pass runs: the CPU (the reference implementation) or a CUDA GPU
//! (`--features cuda`, see `crate::cuda`). Both compute the same f32 math; the GPU agrees with
//! the CPU to rounding (about 1e-5 relative), not bit for bit.

use anyhow::{Result, bail};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    /// CUDA when this build has it and a GPU is usable, else the CPU.
    Auto,
}

impl Device {
    /// Auto resolved to the device that will run (never `Auto`).
    pub fn resolve(self) -> Device {
        match self {
            Device::Auto if crate::cuda::available() => Device::Cuda,
            Device::Auto => Device::Cpu,
            d => d,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Auto => "auto",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Device {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            "auto" => Ok(Device::Auto),
            _ => bail!("unknown device {s:?} (expected cpu, cuda or auto)"),
        }
    }
}

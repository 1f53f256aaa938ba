//! Helpers shared by the integration tests that drive the real `llmjp-convert` binary.
//!
//! Use it from a test file with `mod common;`. Everything here panics with a readable message
//! on failure, so tests can call it without `unwrap` noise.
//!
//! - [`tmp`]: a fresh, empty directory for one test, removed when the test passes.
//! - [`run`]: runs the binary and returns its [`Output`].
//! - [`synth`]: writes a fixture model (`llmjp-convert synth PRESET -o DIR`).
//! - [`dir_digest`]: a sha256 over a directory tree, to prove that it did not change.
//! - [`stderr`] / [`stdout`]: an [`Output`]'s streams as text.

// Each test binary compiles its own copy and uses only some of the helpers.
#![allow(dead_code)]

pub mod reference;

use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_llmjp-convert");

/// A fresh, empty directory `CARGO_TARGET_TMPDIR/<test binary>/<name>` that is removed again
/// when the returned guard drops, unless the test is failing (then it stays for a look) or
/// `LLMJP_KEEP_TEST_FILES` is set. The whole suite writes ~10 GB of models; CI machines do
/// not always have that much disk free, so each test gives its space back.
/// Tests run in parallel, so give each test its own `name`; the test binary's name is part of
/// the path, so names need only be unique within one file.
pub fn tmp(name: &str) -> Scratch {
    Scratch(tmp_keep(name))
}

/// Like [`tmp`], but the directory stays: for fixtures shared by several tests of one binary.
pub fn tmp_keep(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let stem = exe
        .file_stem()
        .expect("exe name")
        .to_string_lossy()
        .into_owned();
    // Cargo names test binaries `<file>-<hash>`.
    let binary = stem
        .rsplit_once('-')
        .map_or(stem.as_str(), |(b, _)| b)
        .to_string();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(binary)
        .join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| panic!("{}: cannot remove: {e}", dir.display()));
    }
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("{}: cannot create: {e}", dir.display()));
    dir
}

/// A test's scratch directory; see [`tmp`].
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("LLMJP_KEEP_TEST_FILES").is_none() {
            // Best effort: a leftover directory costs disk, not correctness.
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `llmjp-convert ARGS...` to completion and returns its status, stdout and stderr.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{BIN}: cannot run: {e}"))
}

/// Writes the synth preset `preset` (`dense`, `gqa`, `moe`, `sharded`) into `dir`, which may
/// exist (empty) or not. Panics with the binary's stderr if generation fails.
pub fn synth(preset: &str, dir: &Path) {
    let o = run([
        OsStr::new("synth"),
        OsStr::new(preset),
        OsStr::new("--force"),
        OsStr::new("-o"),
        dir.as_os_str(),
    ]);
    assert!(
        o.status.success(),
        "synth {preset} -o {} failed: {}",
        dir.display(),
        stderr(&o)
    );
}

/// sha256 (hex) over every entry under `dir`, in sorted order: each entry's path relative to
/// `dir`, its kind (file or directory) and, for files, its length and bytes. Equal digests mean
/// that no file was added, removed, renamed or changed.
pub fn dir_digest(dir: &Path) -> String {
    fn walk(root: &Path, dir: &Path, h: &mut Sha256) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: cannot list: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            h.update((rel.len() as u64).to_le_bytes());
            h.update(rel.as_bytes());
            if p.is_dir() {
                h.update(b"d");
                walk(root, &p, h);
            } else {
                let bytes = std::fs::read(&p)
                    .unwrap_or_else(|e| panic!("{}: cannot read: {e}", p.display()));
                h.update(b"f");
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
        }
    }
    let mut h = Sha256::new();
    walk(dir, dir, &mut h);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The names of the entries directly in `dir`, sorted (empty if `dir` does not exist).
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// The process's stderr as (lossy) UTF-8.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The process's stdout as (lossy) UTF-8.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

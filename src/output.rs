//! Output files are written to a temporary name beside the target, hashed while they are
//! written, and renamed into place only when complete; on any error the temporary is removed.
//! So a failed run (bad input, disk full, Ctrl-C aside) never leaves a partial output behind.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Refuses an existing output unless `force`; the input is never a valid output.
pub fn check_output_path(out: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    if out.exists() && !force {
        bail!("{}: output exists (use --force to overwrite)", out.display());
    }
    if out.is_dir() {
        bail!("{}: output is a directory", out.display());
    }
    for i in inputs {
        if let (Ok(a), Ok(b)) = (out.canonicalize(), i.canonicalize()) {
            if a == b || a.starts_with(&b) && b.is_file() {
                bail!("{}: output would overwrite the input", out.display());
            }
        }
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("{}: directory does not exist", parent.display());
        }
    }
    Ok(())
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    pub written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: Option<HashingWriter<BufWriter<File>>>,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> Result<Self> {
        let name = dest.file_name().context("output path has no file name")?.to_string_lossy();
        let tmp = dest.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            writer: Some(HashingWriter {
                inner: BufWriter::with_capacity(8 << 20, f),
                hasher: Sha256::new(),
                written: 0,
            }),
        })
    }

    pub fn writer(&mut self) -> &mut HashingWriter<BufWriter<File>> {
        self.writer.as_mut().expect("writer present until commit")
    }

    /// Flushes, syncs and renames into place; returns the sha256 (hex) of the content.
    pub fn commit(mut self) -> Result<String> {
        let w = self.writer.take().expect("writer present until commit");
        let hash = hex(&w.hasher.finalize());
        let file = w
            .inner
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("{}: write failed", self.dest.display()))?;
        file.sync_all().with_context(|| format!("{}: sync failed", self.dest.display()))?;
        std::fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("{}: cannot rename into place", self.dest.display()))?;
        Ok(hash)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `<file>.sha256` in `sha256sum` format, so `sha256sum -c` checks the output.
pub fn write_checksum(file: &Path, hash: &str) -> Result<PathBuf> {
    let side = PathBuf::from(format!("{}.sha256", file.display()));
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let mut a = AtomicFile::create(&side)?;
    writeln!(a.writer(), "{hash}  {name}")?;
    a.commit()?;
    Ok(side)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

//! Output files are written to a temporary name beside the target, hashed while they are
//! written, and renamed into place only when complete; on any error the temporary is removed.
//! So a failed run (bad input, disk full, Ctrl-C aside) never leaves a partial output behind.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Refuses an existing output unless `force`, and refuses outright to overwrite an input: an
/// input file itself, or (for an input directory, a model checkpoint) any `.safetensors` or
/// `.json` file in it, which are what a checkpoint is made of. Writing a new file beside the
/// inputs (`MODEL_DIR/model.gguf`) is allowed.
pub fn check_output_path(out: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    for i in inputs {
        if let (Ok(a), Ok(b)) = (out.canonicalize(), i.canonicalize()) {
            let checkpoint_file = matches!(
                a.extension().and_then(|e| e.to_str()),
                Some("safetensors" | "json")
            );
            if a == b || b.is_dir() && a.starts_with(&b) && checkpoint_file {
                bail!("{}: output would overwrite the input", out.display());
            }
        }
    }
    if out.exists() && !force {
        bail!(
            "{}: output exists (use --force to overwrite)",
            out.display()
        );
    }
    if out.is_dir() {
        bail!("{}: output is a directory", out.display());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        bail!("{}: directory does not exist", parent.display());
    }
    Ok(())
}

/// A writer that hashes what passes through it. Its I/O errors name the file being written
/// (e.g. "out.gguf: No space left on device"), so that a caller that adds no context of its
/// own still reports which file failed.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    /// The file the errors name: the final destination, not the temporary.
    path: PathBuf,
    pub written: u64,
}

impl<W: Write> HashingWriter<W> {
    fn annotate(&self, e: std::io::Error) -> std::io::Error {
        if e.kind() == std::io::ErrorKind::Interrupted {
            // write_all retries these; keep them as they are.
            return e;
        }
        std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf).map_err(|e| self.annotate(e))?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.annotate(e))
    }
}

pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    writer: Option<HashingWriter<BufWriter<File>>>,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> Result<Self> {
        let name = dest
            .file_name()
            .context("output path has no file name")?
            .to_string_lossy();
        let tmp = dest.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            writer: Some(HashingWriter {
                inner: BufWriter::with_capacity(8 << 20, f),
                hasher: Sha256::new(),
                path: dest.to_path_buf(),
                written: 0,
            }),
        })
    }

    pub fn writer(&mut self) -> &mut HashingWriter<BufWriter<File>> {
        self.writer.as_mut().expect("writer present until commit")
    }

    /// Flushes, syncs and renames into place; returns the sha256 (hex) of the content.
    /// On any failure the temporary is removed, as when the file is dropped uncommitted.
    pub fn commit(self) -> Result<String> {
        self.commit_with(|_| Ok(()))
    }

    /// As `commit`, but runs `before_rename` with the finished content's sha256 first (to
    /// write a checksum sidecar): if it fails, the output never appears.
    pub fn commit_with(mut self, before_rename: impl FnOnce(&str) -> Result<()>) -> Result<String> {
        let w = self.writer.take().expect("writer present until commit");
        let result = Self::finish(w, &self.tmp, &self.dest, before_rename);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }

    fn finish(
        w: HashingWriter<BufWriter<File>>,
        tmp: &Path,
        dest: &Path,
        before_rename: impl FnOnce(&str) -> Result<()>,
    ) -> Result<String> {
        let hash = hex(&w.hasher.finalize());
        let file = w
            .inner
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("{}: write failed", dest.display()))?;
        file.sync_all()
            .with_context(|| format!("{}: sync failed", dest.display()))?;
        drop(file);
        before_rename(&hash)?;
        std::fs::rename(tmp, dest)
            .with_context(|| format!("{}: cannot rename into place", dest.display()))?;
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

pub fn checksum_path(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sha256", file.display()))
}

/// Writes `<file>.sha256` in `sha256sum` format, so `sha256sum -c` checks the output.
pub fn write_checksum(file: &Path, hash: &str) -> Result<PathBuf> {
    let side = checksum_path(file);
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

//! Streaming tensor data into a [`GgufWriter`]: each tensor's row chunks are produced in
//! parallel and written in order, so the bytes never depend on the thread count.
//!
//! Producing and writing overlap: while the calling thread writes (and so hashes) one group of
//! chunks, the thread pool produces the next. Done one after the other, the write and the hash
//! (about 40% of the CPU time of a bf16 -> f16 run) left the pool idle, and a conversion took
//! twice as long as copying the bytes when the disk was not the bottleneck (BENCHMARKS.md).
//! `to-gguf` and `quantize` both write through this.

use super::writer::GgufWriter;
use crate::progress::Progress;
use anyhow::Result;
use rayon::prelude::*;
use std::io::Write;
use std::ops::Range;

/// Writes every tensor of `tensors`, in order. `chunks(t)` splits tensor `t` into row ranges,
/// `produce(t, rows)` makes those rows' bytes, and `done(t)` runs once `t` is fully written
/// (to release its source pages).
pub fn write_tensors<T: Sync, W: Write>(
    w: &mut GgufWriter<W>,
    tensors: &[T],
    chunks: impl Fn(&T) -> Vec<Range<usize>>,
    produce: impl Fn(&T, Range<usize>) -> Result<Vec<u8>> + Sync,
    mut done: impl FnMut(&T),
    progress: &Progress,
) -> Result<()> {
    /// One group of chunks of one tensor, produced together and written in order.
    struct Item<'a, T> {
        t: &'a T,
        chunks: Vec<Range<usize>>,
        first: bool,
        last: bool,
    }
    let batch = rayon::current_num_threads().max(1) * 2;
    let mut items = Vec::new();
    for t in tensors {
        let cs = chunks(t);
        // A tensor with no rows still gets one (empty) item, to begin and end it.
        let groups: Vec<Vec<Range<usize>>> = if cs.is_empty() {
            vec![Vec::new()]
        } else {
            cs.chunks(batch).map(<[_]>::to_vec).collect()
        };
        let n = groups.len();
        for (i, g) in groups.into_iter().enumerate() {
            items.push(Item {
                t,
                chunks: g,
                first: i == 0,
                last: i + 1 == n,
            });
        }
    }
    let make = |it: &Item<T>| -> Result<Vec<Vec<u8>>> {
        it.chunks
            .par_iter()
            .map(|r| produce(it.t, r.clone()))
            .collect()
    };
    let mut write = |it: &Item<T>, parts: Vec<Vec<u8>>| -> Result<()> {
        if it.first {
            w.begin_tensor()?;
        }
        for p in parts {
            w.write(&p)?;
            progress.inc(p.len() as u64);
        }
        if it.last {
            w.end_tensor()?;
            done(it.t);
        }
        Ok(())
    };
    // The previous item and its parts, not yet written.
    let mut pending: Option<(&Item<T>, Vec<Vec<u8>>)> = None;
    for it in &items {
        let mut next = None;
        let mut written = Ok(());
        // The spawned work runs in the current pool (the global one, or the one a caller
        // installed); the body writes on this thread. If this thread is itself the pool's only
        // worker, it produces after writing: slower, never stuck.
        rayon::in_place_scope(|s| {
            s.spawn(|_| next = Some(make(it)));
            if let Some((prev, parts)) = pending.take() {
                written = write(prev, parts);
            }
        });
        written?;
        pending = Some((it, next.expect("the scope ran the producer")?));
    }
    if let Some((prev, parts)) = pending.take() {
        write(prev, parts)?;
    }
    Ok(())
}

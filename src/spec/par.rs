//! Start-up work spread over the machine's cores.
//!
//! Reading, parsing and compiling 1,000 spec files is independent per file
//! and CPU-bound (YAML, JSON Schema compilation), so start-up time is the
//! slowest core's share. Plain scoped threads are enough: the work is split
//! once into contiguous chunks, and results come back in input order, so
//! messages and registry order do not depend on scheduling.

use std::num::NonZeroUsize;

/// Below this many items the threads cost more than they save.
const MIN_PER_THREAD: usize = 16;

/// `items.iter().map(f).collect()`, computed on up to all cores.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let threads = cores.min(items.len() / MIN_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let mut chunks = items.chunks(chunk);
        // The first chunk runs on this thread; the others on their own.
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> = chunks
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.iter().map(f).collect();
        for handle in handles {
            match handle.join() {
                Ok(part) => out.extend(part),
                // A panic in `f` is a bug; keep its message and location.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_input_order() {
        let items: Vec<usize> = (0..1000).collect();
        let out = super::map(&items, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(super::map(&[] as &[usize], |i| *i).is_empty());
    }
}

//! Work spread over every core: the one place the core starts threads.

/// Bytes of event JSON below which work stays on the calling thread:
/// starting threads costs more than sharing so little saves.
pub const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// `items.iter().map(f).collect()`, on every core when `parallel` and there
/// is more than one: items are dealt round-robin over the threads (uneven
/// items, such as files, spread evenly), results come back in input order.
/// A panic in `f` surfaces here, as it would on this thread.
pub fn map_parallel<'a, T: Sync, R: Send>(
    items: &'a [T],
    parallel: bool,
    f: impl Fn(&'a T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if !parallel || threads < 2 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    items
                        .iter()
                        .enumerate()
                        .skip(t)
                        .step_by(threads)
                        .map(|(i, item)| (i, f(item)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(done) => {
                    for (i, r) in done {
                        out[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    // every slot was filled: each index went to exactly one thread
    out.into_iter().flatten().collect()
}

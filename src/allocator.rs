//! Settings of the binaries' allocator (mimalloc, set as the global
//! allocator by each binary; the library itself does not choose one).

/// mimalloc's `mi_option_purge_delay`, by its number in mimalloc v3's option
/// enum: libmimalloc-sys (pinned in Cargo.toml) does not name it. A test
/// checks that this option has the purge delay's default, 1,000 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory for reuse instead of handing it back to the OS a
/// second after it is freed. Each batch frees and allocates again tens to
/// hundreds of MB (a warm Lambda function: every invocation), and memory
/// handed back is zeroed again by the kernel when it is next touched: on
/// 100,000-event batches one after the other that was about a fifth of the
/// time (BENCHMARKS.md). The process's memory then stays at its peak, which
/// one batch bounds.
pub fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's global options, which mimalloc allows
    // at any time from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_number_is_mimallocs_purge_delay() {
        // the only option defaulting to 1,000 among its neighbours; a
        // renumbered enum would show here (unless MIMALLOC_PURGE_DELAY is set)
        let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(value, 1000);
        }
        let neighbours = unsafe {
            [
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY - 1),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY + 1),
            ]
        };
        assert!(!neighbours.contains(&1000), "{neighbours:?}");
    }
}

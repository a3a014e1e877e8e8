//! The memory allocator of every ota process: jemalloc, asking the kernel
//! for transparent huge pages.
//!
//! Why: the in-process staging store holds the fleet's documents (about
//! 600 bytes each, 0.6 GB at a million vehicles) and each lookup lands on a
//! random one. With 4 KiB pages that read also misses the TLB, and in a
//! virtual machine the page walk costs about as much as the read itself;
//! 2 MiB pages take most walks away (docs/benchmarks.md, Staging).
//! `thp:always` only advises the kernel (`MADV_HUGEPAGE`), so it does
//! nothing where the kernel's THP mode is `never`. Setting
//! `_RJEM_MALLOC_CONF=thp:default` in the environment turns it off.

pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options, as the C string it reads before `main` runs.
pub const OPTIONS: &[u8] = b"thp:always,metadata_thp:auto\0";

/// Hands [`OPTIONS`] to jemalloc. Call it once at the root of a binary
/// next to the `#[global_allocator]`: a library's static might not be
/// linked in, and jemalloc would silently run without it.
#[macro_export]
macro_rules! jemalloc_options {
    () => {
        // jemalloc looks this symbol up before `main`; its own definition
        // is weak, so this one wins.
        #[allow(unsafe_code)]
        #[export_name = "_rjem_malloc_conf"]
        static JEMALLOC_OPTIONS: &u8 = &$crate::alloc::OPTIONS[0];
    };
}

/// jemalloc's huge-page mode as it runs (`always`, `default` or `never`):
/// what start-up logs, so an operator sees whether the options took.
/// `None` when jemalloc cannot tell.
#[allow(unsafe_code)]
pub fn huge_pages() -> Option<String> {
    use std::ffi::{c_char, c_void, CStr};

    let mut value: *const c_char = std::ptr::null();
    let mut len = std::mem::size_of::<*const c_char>();
    // SAFETY: `opt.thp` is a read-only string option; jemalloc writes one
    // pointer to a static C string into `value`, and `len` says so.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"opt.thp".as_ptr(),
            std::ptr::from_mut(&mut value).cast::<c_void>(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 || value.is_null() {
        return None;
    }
    // SAFETY: non-null, and jemalloc's option strings live for the process.
    Some(
        unsafe { CStr::from_ptr(value) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    crate::jemalloc_options!();

    #[test]
    fn jemalloc_runs_with_the_huge_page_option() {
        assert_eq!(super::huge_pages().as_deref(), Some("always"));
    }
}

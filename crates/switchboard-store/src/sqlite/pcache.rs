//! SQLite's own page cache, wrapped to skip a commit's needless walk of it. Must not change
//! what the cache holds or returns: every call goes to SQLite's cache unchanged, but one.
//!
//! At the end of every write transaction SQLite truncates its page cache to the database's
//! size. Its cache skips that when no page past the size was ever cached, else walks the
//! pages past it, or, when the largest page number it has seen is far beyond the size, its
//! whole hash table. A B-tree balance that reorders sibling pages parks one under a
//! temporary number past 1 GiB (the never-used lock-byte page), so after the first such
//! balance every commit walked every cached page: 3.4% of the server's CPU in the full
//! cycle (perf, 7,200 cached pages), more as the cache fills. Here each cache knows the
//! largest page number it holds (the temporary one aside: it never outlives the balance)
//! and passes a truncation on only if a page it holds is past the limit.
//!
//! [`install`] must run before SQLite initializes (before the process's first connection
//! opens); otherwise the plain cache stays, as does everything else.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// SQLite's own cache methods, wrapped here.
struct Inner(ffi::sqlite3_pcache_methods2);

// SAFETY: SQLite's cache methods are thread-safe (they take the cache's own mutex); `pArg`
// is SQLite's, only handed back to its `xInit` and `xShutdown`.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

static INNER: OnceLock<Inner> = OnceLock::new();

static SKIPPED: AtomicU64 = AtomicU64::new(0);
static PASSED_ON: AtomicU64 = AtomicU64::new(0);

/// Truncations of the process's page caches so far, since [`install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncations {
    /// Not passed on: no page past the limit.
    pub skipped: u64,
    /// Passed on to SQLite's cache.
    pub passed_on: u64,
}

pub fn truncations() -> Truncations {
    Truncations {
        skipped: SKIPPED.load(Ordering::Relaxed),
        passed_on: PASSED_ON.load(Ordering::Relaxed),
    }
}

/// One cache: SQLite's, and the largest page number in it (an upper bound).
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    max_key: c_uint,
    /// The number a balance parks a page under for a moment (the lock-byte page's).
    parked_key: c_uint,
}

/// Whether the wrapped cache is installed: `false` if SQLite was initialized before.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let mut own = std::mem::MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
        // SAFETY: GETPCACHE2 fills the struct it is given (SQLite's default cache if none
        // was configured); both calls fail with MISUSE once SQLite is initialized.
        let got = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, own.as_mut_ptr()) };
        if got != ffi::SQLITE_OK {
            return false;
        }
        // SAFETY: filled by the call above.
        let own = unsafe { own.assume_init() };
        if INNER.set(Inner(own)).is_err() {
            return false;
        }
        let wrapped = ffi::sqlite3_pcache_methods2 {
            iVersion: own.iVersion,
            pArg: std::ptr::null_mut(),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            xCreate: Some(x_create),
            xCachesize: Some(x_cachesize),
            xPagecount: Some(x_pagecount),
            xFetch: Some(x_fetch),
            xUnpin: Some(x_unpin),
            xRekey: Some(x_rekey),
            xTruncate: Some(x_truncate),
            xDestroy: Some(x_destroy),
            xShrink: Some(x_shrink),
        };
        // SAFETY: SQLite copies the struct; the functions live as long as the process.
        let set = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &wrapped) };
        set == ffi::SQLITE_OK
    })
}

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    &INNER.get().expect("installed before SQLite calls it").0
}

/// # Safety
/// `p` is a cache [`x_create`] made and [`x_destroy`] has not freed.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    // SAFETY: the caller's promise; SQLite calls a cache's methods one at a time.
    unsafe { &mut *(p as *mut Cache) }
}

macro_rules! call {
    ($method:ident($($arg:expr),*)) => {
        (inner().$method.expect(concat!("SQLite's cache has ", stringify!($method))))($($arg),*)
    };
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    // SAFETY: SQLite's own method with its own argument.
    unsafe { call!(xInit(inner().pArg)) }
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {
    // SAFETY: as above.
    unsafe { call!(xShutdown(inner().pArg)) }
}

unsafe extern "C" fn x_create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    // SAFETY: SQLite's own method with SQLite's arguments.
    let own = unsafe { call!(xCreate(page_size, extra, purgeable)) };
    if own.is_null() {
        return own;
    }
    let parked_key = (0x4000_0000 / page_size.max(1)) as c_uint + 1;
    let cache = Box::new(Cache {
        inner: own,
        max_key: 0,
        parked_key,
    });
    Box::into_raw(cache) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn x_cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    // SAFETY: `p` is ours (SQLite's promise), its `inner` SQLite's.
    unsafe { call!(xCachesize(cache(p).inner, n)) }
}

unsafe extern "C" fn x_pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as above.
    unsafe { call!(xPagecount(cache(p).inner)) }
}

unsafe extern "C" fn x_fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: as above.
    let c = unsafe { cache(p) };
    let page = unsafe { call!(xFetch(c.inner, key, create)) };
    if !page.is_null() && key != c.parked_key {
        c.max_key = c.max_key.max(key);
    }
    page
}

unsafe extern "C" fn x_unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    // SAFETY: as above.
    unsafe { call!(xUnpin(cache(p).inner, page, discard)) }
}

unsafe extern "C" fn x_rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: as above.
    let c = unsafe { cache(p) };
    unsafe { call!(xRekey(c.inner, page, old, new)) };
    if new != c.parked_key {
        c.max_key = c.max_key.max(new);
    }
}

unsafe extern "C" fn x_truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: as above.
    let c = unsafe { cache(p) };
    // Drops the pages numbered `limit` and above: there are none past `max_key`.
    if limit > c.max_key {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    PASSED_ON.fetch_add(1, Ordering::Relaxed);
    unsafe { call!(xTruncate(c.inner, limit)) };
    c.max_key = limit.saturating_sub(1);
}

unsafe extern "C" fn x_destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `Box::into_raw` in `x_create`; SQLite destroys a cache once.
    let c = unsafe { Box::from_raw(p as *mut Cache) };
    unsafe { call!(xDestroy(c.inner)) }
}

unsafe extern "C" fn x_shrink(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: as above.
    unsafe { call!(xShrink(cache(p).inner)) }
}

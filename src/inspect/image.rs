//! A file's bytes read as the parser touches them.
//!
//! Inspection used to read a whole file before parsing it: 99 MB for node,
//! of which it needs its headers, the dynamic symbol lookups and a few
//! functions' code. An [`Image`] is a zero-filled buffer of the file's size
//! (the kernel backs it with memory only where it is written) that is filled
//! from the file chunk by chunk on the first access, through object's
//! [`ReadRef`], so the ELF parser and the code reading function bytes work
//! as on a slice.
//!
//! As before, the bytes are copied with `pread`, not mapped: a file truncated
//! or rewritten while it is read gives an error or inconsistent bytes, never
//! SIGBUS in the agent. Each chunk is read once, so the parser sees one
//! version of every byte it looks at twice.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;

use object::ReadRef;

/// Bytes read at a time at least: small enough that a symbol lookup reads
/// little, large enough that a scan of a table makes few system calls.
pub const CHUNK: u64 = 16 << 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Missing,
    Loaded,
    /// Past the end of a file that shrank, or a read error: never handed out.
    Failed,
}

/// The bytes of one file, read on demand (see the module's docs).
pub struct Image {
    /// `len` bytes from `alloc_zeroed`, owned; bytes of a chunk are written
    /// only while it is `Missing`, and handed out only once it is `Loaded`.
    ptr: NonNull<u8>,
    len: usize,
    chunks: RefCell<Vec<Chunk>>,
    source: Source,
}

/// Where the bytes come from.
enum Source {
    File(File),
    /// A copy of bytes in memory, read chunk by chunk like a file (tests,
    /// fuzzing: the same paths as the agent's).
    Bytes(Vec<u8>),
}

impl Image {
    /// An image of `file`, of the size it has now (at most `limit` bytes,
    /// checked by the caller). Nothing is read yet.
    pub fn of_file(file: File, len: u64) -> Result<Image, String> {
        let len = usize::try_from(len).map_err(|_| format!("{len} bytes do not fit in memory"))?;
        Image::zeroed(len, Source::File(file))
    }

    /// An image of bytes in memory, read from a copy of them as from a file
    /// (tests, fuzzing).
    pub fn of_bytes(bytes: &[u8]) -> Image {
        Image::zeroed(bytes.len(), Source::Bytes(bytes.to_vec()))
            .expect("memory for a copy of bytes in memory")
    }

    fn zeroed(len: usize, source: Source) -> Result<Image, String> {
        let ptr = if len == 0 {
            NonNull::dangling()
        } else {
            let layout = Layout::array::<u8>(len).map_err(|e| e.to_string())?;
            // SAFETY: a layout of non-zero size.
            // No transparent huge pages: with Debian's `defrag=madvise`
            // the kernel may compact memory for them synchronously, and
            // a held process waited up to a second (measured on
            // Chromium's 283 MB image; ~200 ms every time without).
            NonNull::new(unsafe { alloc::alloc_zeroed(layout) })
                .ok_or_else(|| format!("cannot allocate {len} bytes"))?
        };
        let n = (len as u64).div_ceil(CHUNK) as usize;
        Ok(Image {
            ptr,
            len,
            chunks: RefCell::new(vec![Chunk::Missing; n]),
            source,
        })
    }

    /// The file's size when the image was made.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes read from the file so far (what the parser touched).
    pub fn bytes_read(&self) -> u64 {
        let chunks = self.chunks.borrow();
        let loaded = chunks.iter().filter(|c| **c == Chunk::Loaded).count() as u64;
        (loaded * CHUNK).min(self.len as u64)
    }

    /// Makes bytes `range` (within `len`) readable: reads the missing
    /// chunks, consecutive ones in one `pread`.
    fn load(&self, range: Range<usize>) -> Result<(), ()> {
        if range.start >= range.end {
            return Ok(());
        }
        let first = range.start / CHUNK as usize;
        let last = (range.end - 1) / CHUNK as usize;
        let mut chunks = self.chunks.borrow_mut();
        let mut i = first;
        while i <= last {
            match chunks[i] {
                Chunk::Loaded => i += 1,
                Chunk::Failed => return Err(()),
                Chunk::Missing => {
                    let mut j = i;
                    while j < last && chunks[j + 1] == Chunk::Missing {
                        j += 1;
                    }
                    let state = self.read_chunks(i, j);
                    chunks[i..=j].fill(state);
                    if state == Chunk::Failed {
                        return Err(());
                    }
                    i = j + 1;
                }
            }
        }
        Ok(())
    }

    /// Reads chunks `first..=last` from the file.
    fn read_chunks(&self, first: usize, last: usize) -> Chunk {
        let start = first * CHUNK as usize;
        let end = ((last + 1) * CHUNK as usize).min(self.len);
        // SAFETY: the chunks are Missing, so no reference to these bytes
        // was handed out; `ptr` owns `len` >= `end` bytes.
        let buf =
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), end - start) };
        let file = match &self.source {
            Source::File(f) => f,
            Source::Bytes(b) => {
                return match b.get(start..end) {
                    Some(from) => {
                        buf.copy_from_slice(from);
                        Chunk::Loaded
                    }
                    None => Chunk::Failed,
                };
            }
        };
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], (start + done) as u64) {
                // Shrunk since the image was made: those bytes are not there.
                Ok(0) => return Chunk::Failed,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Chunk::Failed,
            }
        }
        Chunk::Loaded
    }

    /// `len` bytes at `offset`, read if needed; None past the end or if the
    /// file cannot give them.
    pub fn get(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        if end > self.len {
            return None;
        }
        self.load(start..end).ok()?;
        // SAFETY: in bounds, and every chunk of the range is Loaded: never
        // written again while `self` lives.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), end - start) })
    }

    /// The whole file (Go's tables, a scan of every byte).
    pub fn all(&self) -> Option<&[u8]> {
        self.get(0, self.len as u64)
    }

    /// The file's bytes for a scan that keeps none of them (see [`Raw`]).
    pub fn raw(&self) -> Raw<'_> {
        match &self.source {
            Source::File(f) => Raw::File(f),
            Source::Bytes(b) => Raw::Mem(b),
        }
    }
}

/// A file's bytes read without keeping them: a scan of a whole code
/// section (Chromium's is 236 MB) reads it window by window into one
/// small buffer instead of faulting in memory for all of it, which cost
/// more than the scan. Shareable between the threads of a scan.
#[derive(Clone, Copy)]
pub enum Raw<'a> {
    /// Bytes in memory: handed out as they are.
    Mem(&'a [u8]),
    File(&'a File),
}

impl Raw<'_> {
    /// Fills `buf` from `offset`; an error if the file cannot give all of
    /// it (it shrank, or a read failed).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), String> {
        let n = buf.len();
        let bad = || format!("cannot read {n} bytes at {offset:#x}");
        match self {
            Raw::Mem(m) => {
                let from = usize::try_from(offset).map_err(|_| bad())?;
                let src = from
                    .checked_add(buf.len())
                    .and_then(|to| m.get(from..to))
                    .ok_or_else(bad)?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Raw::File(f) => f
                .read_exact_at(buf, offset)
                .map_err(|e| format!("{}: {e}", bad())),
        }
    }

    /// Whether `buf` could be filled from `offset` without waiting on the
    /// disk (`preadv2` with `RWF_NOWAIT`): the bytes are then in `buf`. A
    /// file whose pages are not all cached answers `false`, and `buf` is
    /// still to be read.
    pub fn read_cached(&self, buf: &mut [u8], offset: u64) -> bool {
        let Raw::File(f) = self else {
            return self.read_exact_at(buf, offset).is_ok();
        };
        use std::os::fd::AsRawFd;
        let Ok(off) = libc::off_t::try_from(offset) else {
            return false;
        };
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec over `buf`, which outlives the call.
        let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, off, libc::RWF_NOWAIT) };
        usize::try_from(n).is_ok_and(|n| n == buf.len())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if self.len != 0 {
            let layout = Layout::array::<u8>(self.len).expect("the layout it was allocated with");
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

impl<'a> ReadRef<'a> for &'a Image {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len as u64)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        self.get(offset, size).ok_or(())
    }

    /// As on a slice: the bytes of `range` before the first `delimiter`;
    /// an error if `range` is not all in the file or has no delimiter. Read
    /// a chunk at a time, so a name costs one chunk, not the whole table.
    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        if range.start > range.end || range.end > self.len as u64 {
            return Err(());
        }
        let mut at = range.start;
        while at < range.end {
            let to = ((at / CHUNK + 1) * CHUNK).min(range.end);
            let part = self.get(at, to - at).ok_or(())?;
            if let Some(i) = memchr::memchr(delimiter, part) {
                return self.get(range.start, at + i as u64 - range.start).ok_or(());
            }
            at = to;
        }
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn reads_only_what_is_touched() {
        let data = pattern(10 * CHUNK as usize + 123);
        let (_keep, file) = file_with(&data);
        let img = Image::of_file(file, data.len() as u64).unwrap();
        assert_eq!(img.bytes_read(), 0);
        assert_eq!(img.get(5, 10), Some(&data[5..15]));
        assert_eq!(img.bytes_read(), CHUNK);
        // Across a chunk boundary: two more chunks, one read.
        let at = 3 * CHUNK - 4;
        assert_eq!(img.get(at, 8), Some(&data[at as usize..at as usize + 8]));
        assert_eq!(img.bytes_read(), 3 * CHUNK);
        // The last, short chunk.
        let n = data.len() as u64;
        assert_eq!(img.get(n - 3, 3), Some(&data[data.len() - 3..]));
        assert_eq!(img.get(n - 3, 4), None);
        assert_eq!(img.get(u64::MAX, 2), None);
        assert_eq!(img.all(), Some(&data[..]));
        assert_eq!(img.bytes_read(), n);
    }

    /// A file that shrinks after the image is made: the bytes no longer
    /// there are an error, never zeros passed off as content.
    #[test]
    fn a_file_that_shrank_gives_errors_past_its_new_end() {
        let data = pattern(4 * CHUNK as usize);
        let (keep, file) = file_with(&data);
        let img = Image::of_file(file, data.len() as u64).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(keep.path())
            .unwrap()
            .set_len(CHUNK + 10)
            .unwrap();
        assert_eq!(img.get(0, 4), Some(&data[..4]));
        assert_eq!(img.get(3 * CHUNK, 4), None);
        // The chunk the new end cuts is refused as a whole.
        assert_eq!(img.get(CHUNK, 4), None);
        assert_eq!(img.all(), None);
    }

    #[test]
    fn strings_end_at_the_delimiter_within_the_range() {
        let mut data = vec![b'a'; 3 * CHUNK as usize];
        data[5] = 0;
        let end = 2 * CHUNK as usize + 9;
        data[end] = 0;
        let img = Image::of_bytes(&data);
        let r = &img;
        assert_eq!(r.read_bytes_at_until(0..10, 0), Ok(&data[..5]));
        assert_eq!(r.read_bytes_at_until(5..10, 0), Ok(&[][..]));
        assert_eq!(
            r.read_bytes_at_until(6..data.len() as u64, 0),
            Ok(&data[6..end])
        );
        assert_eq!(r.read_bytes_at_until(6..end as u64, 0), Err(()));
        assert_eq!(r.read_bytes_at_until(6..u64::MAX, 0), Err(()));
    }

    proptest! {
        /// Any reads, in any order, give what a slice of the file gives.
        #[test]
        fn reads_agree_with_a_slice(
            len in 0usize..(5 * CHUNK as usize),
            reads in proptest::collection::vec((0u64..(6 * CHUNK), 0u64..(2 * CHUNK), any::<bool>()), 1..20),
        ) {
            let data = pattern(len);
            let (_keep, file) = file_with(&data);
            let img = Image::of_file(file, len as u64).unwrap();
            let slice: &[u8] = &data;
            for (off, n, until) in reads {
                if until {
                    let r = off..off.saturating_add(n);
                    prop_assert_eq!((&img).read_bytes_at_until(r.clone(), 3), slice.read_bytes_at_until(r, 3));
                } else {
                    prop_assert_eq!((&img).read_bytes_at(off, n), slice.read_bytes_at(off, n));
                }
            }
        }
    }
}

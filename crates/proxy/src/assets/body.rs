//! Sending a file's bytes: `sendfile(2)` from the page cache to a plain
//! TCP socket (no copy through Baton), reads for TLS and h2, whose bytes
//! Baton must encrypt or frame itself.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes read at a time for a body that is not sent with `sendfile`.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Appends `len` bytes of `file` from `start` to `out`.
///
/// # Errors
/// When the read fails, or the file is shorter than it was (it changed
/// under the answer, whose length is sent already).
pub(crate) fn read_into(file: &File, start: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let at = out.len();
    out.resize(at + len, 0);
    let read = file.read_exact_at(&mut out[at..], start);
    if read.is_err() {
        out.truncate(at);
    }
    read
}

/// Sends `len` bytes of `file` from `start` to `socket` with `sendfile`.
///
/// # Errors
/// When the socket fails, or the file is shorter than it was.
pub(crate) async fn send_file(
    socket: &TcpStream,
    file: &File,
    start: u64,
    len: u64,
) -> io::Result<()> {
    let mut offset = i64::try_from(start).map_err(io::Error::other)?;
    let mut left = len;
    while left > 0 {
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            let count = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
            nix::sys::sendfile::sendfile64(socket.as_fd(), file.as_fd(), Some(&mut offset), count)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))
        });
        match sent {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => left -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file's bytes as an `http_body::Body`, for hyper (h2, upgrades).
#[derive(Debug)]
pub(crate) struct FileBody {
    file: File,
    offset: u64,
    left: u64,
}

impl FileBody {
    /// `len` bytes of `file` from `start`.
    pub(crate) fn new(file: File, start: u64, len: u64) -> FileBody {
        FileBody {
            file,
            offset: start,
            left: len,
        }
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        // From the page cache, as nginx reads without aio: a read does not
        // wait long enough to be worth a thread hop.
        let len = usize::try_from(self.left).unwrap_or(CHUNK).min(CHUNK);
        let mut chunk = Vec::with_capacity(len);
        let offset = self.offset;
        if let Err(e) = read_into(&self.file, offset, len, &mut chunk) {
            self.left = 0;
            return Poll::Ready(Some(Err(e)));
        }
        self.offset += len as u64;
        self.left -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

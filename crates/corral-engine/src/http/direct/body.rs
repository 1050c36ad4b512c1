//! Reading a response body as it is framed: by length, chunked, or to the end of the
//! connection; and giving the connection back once the body has been read to its end.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection ended before a `Content-Length` body did.
    #[error("the connection closed with {left} bytes of the body still to come")]
    ClosedEarly {
        /// Bytes missing.
        left: u64,
    },
    /// The connection ended inside a chunked body.
    #[error("the connection closed inside a chunked body")]
    ClosedInChunk,
    /// A chunk-size line is not a hexadecimal number.
    #[error("bad chunk size {0:?}")]
    BadChunkSize(String),
    /// A chunk's data runs past its size.
    #[error("a chunk of the body is longer than its size")]
    ChunkTooLong,
    /// A line of the chunked framing ends in a bare LF.
    #[error("a line of the chunked body ends in a bare LF, not CRLF")]
    BareLf,
    /// A line of the chunked framing is too long.
    #[error("a chunked body has a line that is too long")]
    LineTooLong,
    /// The trailer section is too large.
    #[error("the body's trailers are too large")]
    TrailersTooLarge,
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

use super::conn::Conn;
use super::head::{Framing, MAX_HEAD};
use super::Direct;

/// A connection lent to one request, with the rest of its response body; give it back with
/// [`Lease::release`] once the body has been read to its end, or drop it (closing the
/// connection) otherwise.
pub struct Lease<'a> {
    pub(super) owner: &'a Direct,
    pub(super) key: Arc<str>,
    pub(super) conn: Conn,
    pub(super) framing: Framing,
    /// The connection can serve another request once this response has been read.
    pub(super) keep_alive: bool,
}

impl Lease<'_> {
    /// Returns the connection to the idle pool (if it is still usable and there is room).
    pub fn release(self) {
        if !self.keep_alive || !matches!(self.framing, Framing::Done) || !self.conn.read.is_empty()
        {
            return;
        }
        self.owner.put_idle(self.key, self.conn);
    }

    /// Reads the next piece of the response body; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                Framing::Length(left) => {
                    let data = self
                        .piece(left)
                        .await?
                        .ok_or(BodyError::ClosedEarly { left })?;
                    self.framing = Framing::Length(left - data.len() as u64);
                    return Ok(Some(data));
                }
                Framing::Close => {
                    let data = self.piece(u64::MAX).await?;
                    if data.is_none() {
                        self.framing = Framing::Done;
                        self.keep_alive = false;
                    }
                    return Ok(data);
                }
                Framing::Chunked(0) => match self.chunk_size().await? {
                    0 => {
                        self.trailers().await?;
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    size => self.framing = Framing::Chunked(size),
                },
                Framing::Chunked(left) => {
                    let data = self.piece(left).await?.ok_or(BodyError::ClosedInChunk)?;
                    let n = data.len() as u64;
                    if n == left {
                        // The chunk's data ends with CRLF.
                        self.expect_crlf().await?;
                    }
                    self.framing = Framing::Chunked(left - n);
                    return Ok(Some(data));
                }
            }
        }
    }

    /// Up to `max` bytes of the response, reading more first when none are at hand; `None` at
    /// the end of the connection.
    async fn piece(&mut self, max: u64) -> Result<Option<Bytes>, BodyError> {
        if self.conn.read.is_empty() && self.fill().await? == 0 {
            return Ok(None);
        }
        let n = (self.conn.read.len() as u64).min(max) as usize;
        Ok(Some(self.conn.read.split_to(n).freeze()))
    }

    async fn fill(&mut self) -> Result<usize, BodyError> {
        Ok(self.conn.fill().await?)
    }

    /// Reads one line (without its CRLF) of at most `max` bytes. A bare LF is refused: a
    /// parser that accepts what another in the path rejects is how requests get smuggled.
    async fn line(&mut self, max: usize) -> Result<BytesMut, BodyError> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.conn.read[searched..].iter().position(|&b| b == b'\n') {
                let mut line = self.conn.read.split_to(searched + i + 1);
                line.truncate(line.len() - 1);
                if line.last() != Some(&b'\r') {
                    return Err(BodyError::BareLf);
                }
                line.truncate(line.len() - 1);
                return Ok(line);
            }
            searched = self.conn.read.len();
            if searched > max {
                return Err(BodyError::LineTooLong);
            }
            if self.fill().await? == 0 {
                return Err(BodyError::ClosedInChunk);
            }
        }
    }

    async fn chunk_size(&mut self) -> Result<u64, BodyError> {
        let line = self.line(4096).await?;
        let digits = line[..].split(|&b| b == b';').next().unwrap_or_default();
        let digits = std::str::from_utf8(digits).unwrap_or_default().trim();
        Some(digits)
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u64::from_str_radix(d, 16).ok())
            .ok_or_else(|| BodyError::BadChunkSize(String::from_utf8_lossy(&line).into_owned()))
    }

    async fn expect_crlf(&mut self) -> Result<(), BodyError> {
        let line = self.line(2).await?;
        if line.is_empty() {
            Ok(())
        } else {
            Err(BodyError::ChunkTooLong)
        }
    }

    /// Skips the trailer section after the last chunk (up to the empty line).
    async fn trailers(&mut self) -> Result<(), BodyError> {
        let mut total = 0;
        loop {
            let line = self.line(MAX_HEAD).await?;
            if line.is_empty() {
                return Ok(());
            }
            total += line.len();
            if total > MAX_HEAD {
                return Err(BodyError::TrailersTooLarge);
            }
        }
    }
}

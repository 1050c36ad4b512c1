//! Response bodies sent with a `Content-Encoding` (`--compressed`, curl's flag): gzip, deflate
//! and br, decoded as they arrive, for both clients alike (reqwest's own decoding is not
//! built in: the cap would then apply after it, out of our hands).
//!
//! Why in small steps: a few kilobytes of gzip can expand to gigabytes. Compressed input is
//! fed `STEP` bytes at a time and the decoded output handed on after each step, so the
//! caller's cap on the decoded size (`--max-body`) stops the body within a step's worth
//! (gzip expands at most ~1032:1: 256 KiB), never after holding the bomb.

use std::io::Write;

/// Compressed bytes fed per step.
const STEP: usize = 256;

/// A streaming decoder for one body.
pub struct Decoder {
    inner: Inner,
}

enum Inner {
    // Every member of the stream, as gunzip does (RFC 1952 allows several; a valid
    // multi-member body was reported corrupt).
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

/// Why a body cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// An encoding this build cannot decode (or a chain of several).
    #[error("cannot decode Content-Encoding {0:?}")]
    Unknown(String),
    /// The compressed bytes are not a valid stream.
    #[error("the compressed body is corrupt: {0}")]
    Corrupt(#[source] std::io::Error),
}

/// The `Accept-Encoding` that `--compressed` sends.
pub const ACCEPT: &str = "gzip, deflate, br";

impl Decoder {
    /// The decoder for a `Content-Encoding` value: `None` for none or `identity`, `Err` for
    /// an encoding this build cannot decode (or a chain of several).
    ///
    pub fn for_encoding(value: &str) -> Result<Option<Self>, DecodeError> {
        let inner = match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => Inner::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            "deflate" => Inner::Deflate(flate2::write::ZlibDecoder::new(Vec::new())),
            "br" => Inner::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
            other => return Err(DecodeError::Unknown(other.to_string())),
        };
        Ok(Some(Self { inner }))
    }

    /// Decodes `input`, handing each decoded piece to `out`; stops as soon as `out` returns
    /// false (the cap is reached) and returns false then.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<bool, DecodeError> {
        for step in input.chunks(STEP) {
            self.write(step)?;
            if !self.drain(out) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The body ended: the decoder's last output (and whether the stream was whole).
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8]) -> bool) -> Result<bool, DecodeError> {
        let r = match &mut self.inner {
            Inner::Gzip(d) => d.try_finish(),
            Inner::Deflate(d) => d.try_finish(),
            Inner::Brotli(d) => d.flush(),
        };
        r.map_err(DecodeError::Corrupt)?;
        Ok(self.drain(out))
    }

    fn write(&mut self, step: &[u8]) -> Result<(), DecodeError> {
        let r = match &mut self.inner {
            Inner::Gzip(d) => d.write_all(step),
            Inner::Deflate(d) => d.write_all(step),
            Inner::Brotli(d) => d.write_all(step),
        };
        r.map_err(DecodeError::Corrupt)
    }

    fn drain(&mut self, out: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let buf = match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Deflate(d) => d.get_mut(),
            Inner::Brotli(d) => d.get_mut(),
        };
        let go_on = buf.is_empty() || out(buf);
        buf.clear();
        go_on
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_known_or_refused_by_name() {
        assert!(Decoder::for_encoding("gzip").unwrap().is_some());
        assert!(Decoder::for_encoding("identity").unwrap().is_none());
        assert!(matches!(
            Decoder::for_encoding("zstd"),
            Err(DecodeError::Unknown(e)) if e == "zstd"
        ));
    }

    fn decode(enc: &str, data: &[u8], cap: usize) -> (Vec<u8>, bool) {
        let mut d = Decoder::for_encoding(enc).unwrap().unwrap();
        let mut got = Vec::new();
        let mut take = |p: &[u8]| {
            let room = cap - got.len();
            got.extend_from_slice(&p[..p.len().min(room)]);
            p.len() <= room && got.len() < cap
        };
        let whole = d.feed(data, &mut take).unwrap() && d.finish(&mut take).unwrap();
        (got, whole)
    }

    #[test]
    fn a_gzip_body_of_several_members_is_decoded_whole() {
        let member = |text: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(text).unwrap();
            gz.finish().unwrap()
        };
        let body = [member(b"first half, "), member(b"second half")].concat();
        let (got, whole) = decode("gzip", &body, 1 << 20);
        assert_eq!(got, b"first half, second half");
        assert!(whole);
    }

    #[test]
    fn gzip_deflate_and_br_decode_byte_exact() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&body).unwrap();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&body).unwrap();
        }
        for (enc, data) in [
            ("gzip", gz.finish().unwrap()),
            ("deflate", zl.finish().unwrap()),
            ("br", br),
        ] {
            let (got, whole) = decode(enc, &data, usize::MAX / 2);
            assert!(whole, "{enc}");
            assert_eq!(got, body, "{enc}");
        }
    }

    #[test]
    fn a_bomb_is_cut_at_the_cap_without_decoding_it_all() {
        // 64 MiB of zeros is ~64 KiB of gzip: fed whole, decoding stops at the 1 MiB cap.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        let mut d = Decoder::for_encoding("gzip").unwrap().unwrap();
        let (mut seen, cap) = (0usize, 1usize << 20);
        let mut steps = 0;
        let whole = d
            .feed(&bomb, &mut |p| {
                steps += 1;
                seen += p.len();
                seen < cap
            })
            .unwrap();
        assert!(!whole);
        assert!(
            seen < cap + (300 << 10),
            "decoded {seen} bytes before stopping"
        );
        assert!(steps > 1);
    }

    #[test]
    fn unknown_and_corrupt_encodings_are_errors() {
        assert!(Decoder::for_encoding("gzip, br").is_err());
        let mut d = Decoder::for_encoding("gzip").unwrap().unwrap();
        let r = d.feed(b"this is not gzip at all", &mut |_| true);
        assert!(r.is_err() || d.finish(&mut |_| true).is_err());
    }
}

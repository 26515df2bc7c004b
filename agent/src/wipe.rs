//! Buffers that held a secret on its way in or out, wiped when dropped.
//!
//! Why: a process of the job that reads lanyard's memory (see
//! `cli::main`'s non-dumpable flag for the first line of defence) found
//! several copies of a KV secret: the credential itself, and buffers that
//! had held it and were freed without being cleared. Token answers (HTTP
//! bodies and the JSON parsed from them) and the rendered credential header
//! are ours to clear; the transport's own buffers (hyper, rustls) are not.

use bytes::Bytes;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

/// Owned bytes that are zeroized on drop: the backing store of a `Bytes`
/// made with [`Bytes::from_owner`], so that the last clone of a header
/// value wipes the credential it carried.
pub struct WipedBytes(Vec<u8>);

impl AsRef<[u8]> for WipedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for WipedBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// `Bytes` over `value`, wiped when the last clone is dropped.
pub fn bytes(value: Vec<u8>) -> Bytes {
    Bytes::from_owner(WipedBytes(value))
}

/// Append `data` to `buf` without leaving a copy behind: when `buf` must
/// grow, its contents move to a larger buffer and the old one is wiped
/// (a plain `Vec` would free it as it was).
pub fn append(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let need = buf.len() + data.len();
    if need > buf.capacity() {
        let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(buf.capacity() * 2)));
        bigger.extend_from_slice(buf);
        // The old buffer is zeroized as it drops here.
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

/// An `io::Write` over [`append`], for serde to write a secret into
/// without leaving the buffers it grew out of behind.
#[derive(Default)]
pub struct Writer(pub Zeroizing<Vec<u8>>);

impl std::io::Write for Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        append(&mut self.0, data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Received chunks, cleared when dropped if nothing else shares their
/// memory by then. A chunk is a view into the transport's read buffer;
/// holding it until the answer is parsed gives the (unpooled) connection
/// time to let go of that buffer, so that the wipe reaches it. A chunk
/// still shared at that point is left to the transport.
#[derive(Default)]
pub struct Chunks(Vec<Bytes>);

impl Chunks {
    pub fn push(&mut self, chunk: Bytes) {
        self.0.push(chunk);
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        for chunk in self.0.drain(..) {
            if let Ok(mut m) = chunk.try_into_mut() {
                m.as_mut().zeroize();
            }
        }
    }
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunks({})", self.0.len())
    }
}

/// A JSON token answer whose strings are zeroized when it is dropped; the
/// token taken out of it lives on only in a [`crate::secret::Secret`].
pub struct WipedJson(Value);

impl WipedJson {
    pub fn parse(body: &[u8]) -> Result<WipedJson, serde_json::Error> {
        serde_json::from_slice(body).map(WipedJson)
    }
}

impl std::ops::Deref for WipedJson {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

fn wipe_value(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe_value),
        Value::Object(m) => m.values_mut().for_each(wipe_value),
        _ => {}
    }
}

impl Drop for WipedJson {
    fn drop(&mut self) {
        wipe_value(&mut self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_wiped_on_drop() {
        let mut j = WipedJson::parse(br#"{"a":{"b":["canary-token-1"]},"c":"canary-token-2"}"#)
            .expect("json");
        assert_eq!(j["c"], "canary-token-2");
        wipe_value(&mut j.0);
        assert_eq!(j["c"], "");
        assert_eq!(j["a"]["b"][0], "");
    }

    #[test]
    fn append_keeps_every_byte_in_order() {
        let mut b = Zeroizing::new(Vec::new());
        for chunk in [&b"abc"[..], b"", b"defgh", &[b'x'; 100]] {
            append(&mut b, chunk);
        }
        assert_eq!(&b[..8], b"abcdefgh");
        assert_eq!(b.len(), 108);
    }

    #[test]
    fn serde_writes_whole_through_the_writer() {
        let mut w = Writer::default();
        let long = "t".repeat(5000);
        serde_json::to_writer_pretty(&mut w, &serde_json::json!({ "token": long })).expect("write");
        let back: serde_json::Value = serde_json::from_slice(&w.0).expect("json");
        assert_eq!(back["token"].as_str(), Some(long.as_str()));
    }

    #[test]
    fn wiped_bytes_read_like_the_value() {
        let b = bytes(b"Bearer tok".to_vec());
        let c = b.clone();
        drop(b);
        assert_eq!(&c[..], b"Bearer tok");
    }
}

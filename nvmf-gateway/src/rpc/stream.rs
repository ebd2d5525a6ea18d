//! Splits a byte stream into JSON values. SPDK's client sends pretty-printed JSON with no
//! framing (values back to back, maybe split across reads), so the only way to find the
//! end of a request is to parse it.

use serde_json::Value;

/// Bytes one request may take; a client that sends more without completing a value is
/// cut off (and so is the memory it could make us hold).
pub const RPC_REQUEST_MAX_BYTES: usize = 4 << 20;

#[derive(Debug, PartialEq)]
pub enum StreamError {
    /// Not JSON: the stream cannot be resynchronized.
    Parse(String),
    TooLarge,
}

/// Accumulates bytes and yields the complete values in them.
#[derive(Default)]
pub struct JsonStream {
    buf: Vec<u8>,
}

impl JsonStream {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete value, `Ok(None)` when more bytes are needed.
    pub fn next_value(&mut self) -> Result<Option<Value>, StreamError> {
        let start = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buf.len());
        self.buf.drain(..start);
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => {
                let consumed = values.byte_offset();
                assert!(
                    consumed <= self.buf.len(),
                    "the parser stays inside the buffer"
                );
                self.buf.drain(..consumed);
                Ok(Some(value))
            }
            Some(Err(error)) if error.is_eof() => {
                if self.buf.len() > RPC_REQUEST_MAX_BYTES {
                    Err(StreamError::TooLarge)
                } else {
                    Ok(None)
                }
            }
            Some(Err(error)) => Err(StreamError::Parse(error.to_string())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_pretty_values_split_anywhere() {
        let text = "{\n  \"jsonrpc\": \"2.0\",\n  \"method\": \"a\",\n  \"id\": 1\n}{\"id\":2,\"method\":\"b\"}  [ {\"id\":3} ]";
        for split in 0..text.len() {
            let mut stream = JsonStream::default();
            let mut got = Vec::new();
            stream.push(&text.as_bytes()[..split]);
            while let Some(v) = stream.next_value().unwrap() {
                got.push(v);
            }
            stream.push(&text.as_bytes()[split..]);
            while let Some(v) = stream.next_value().unwrap() {
                got.push(v);
            }
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[1]["method"], "b");
            assert!(got[2].is_array());
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut stream = JsonStream::default();
        stream.push(b"{\"a\": ]");
        assert!(matches!(stream.next_value(), Err(StreamError::Parse(_))));
    }
}

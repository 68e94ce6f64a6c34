//! Just enough of WebSocket framing (RFC 6455 §5.2) for Baton to end a
//! tunnel politely: it follows frame boundaries in the instance-to-client
//! direction so that a close frame (1001 "going away") can be slipped in
//! between two frames, never inside one.

/// Tracks where frames start and end in a byte stream.
#[derive(Debug, Default)]
pub(crate) struct FrameTracker {
    header: Vec<u8>,
    remaining: u64,
}

impl FrameTracker {
    /// Follows `data` as it passes.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining).min(data.len() as u64) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header.push(data[0]);
            data = &data[1..];
            if let Some((header_len, payload_len)) = parse_header(&self.header) {
                if self.header.len() == header_len {
                    self.remaining = payload_len;
                    self.header.clear();
                }
            }
        }
    }

    /// True between two frames.
    pub(crate) fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }
}

/// Header length and payload length, once enough header bytes are known.
fn parse_header(h: &[u8]) -> Option<(usize, u64)> {
    if h.len() < 2 {
        return None;
    }
    let masked = h[1] & 0x80 != 0;
    let len7 = h[1] & 0x7f;
    let mask = if masked { 4 } else { 0 };
    let (header_len, payload) = match len7 {
        126 => {
            let hl = 4 + mask;
            if h.len() < 4 {
                return Some((hl, 0));
            }
            (hl, u16::from_be_bytes([h[2], h[3]]) as u64)
        }
        127 => {
            let hl = 10 + mask;
            if h.len() < 10 {
                return Some((hl, 0));
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[2..10]);
            (hl, u64::from_be_bytes(b))
        }
        n => (2 + mask, n as u64),
    };
    Some((header_len, payload))
}

/// A server-to-client close frame (unmasked) with `code` and `reason`.
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut f = vec![0x88, (2 + reason.len()) as u8];
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

/// Whether an upgrade request asks for WebSocket.
pub(crate) fn is_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boundaries are found across splits, for short, 16-bit and masked frames.
    #[test]
    fn tracks_boundaries_across_chunks() {
        let mut t = FrameTracker::default();
        let small = [0x81, 0x03, b'a', b'b', b'c'];
        t.feed(&small[..1]);
        assert!(!t.at_boundary());
        t.feed(&small[1..4]);
        assert!(!t.at_boundary());
        t.feed(&small[4..]);
        assert!(t.at_boundary());
        let mut medium = vec![0x82, 126, 0x01, 0x00];
        medium.extend(std::iter::repeat_n(7u8, 256));
        for chunk in medium.chunks(7) {
            t.feed(chunk);
        }
        assert!(t.at_boundary());
        let masked = [0x81, 0x82, 1, 2, 3, 4, 9, 9];
        t.feed(&masked[..6]);
        assert!(!t.at_boundary());
        t.feed(&masked[6..]);
        assert!(t.at_boundary());
    }

    /// The close frame carries code 1001 and the reason.
    #[test]
    fn close_frame_layout() {
        assert_eq!(
            close_frame(1001, "going away"),
            [&[0x88, 12, 0x03, 0xe9][..], b"going away"].concat()
        );
    }
}

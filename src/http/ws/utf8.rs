//! UTF-8 validation of a text message fed in pieces, failing at the first byte that no valid
//! text can continue with (RFC 6455 section 8.1 asks to fail as soon as that is known).

/// The bytes fed were not the start of valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

/// Validates a text as its pieces arrive, split anywhere, even inside a character.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Check {
    /// The start of a character the last piece ended in.
    pending: [u8; 4],
    len: u8,
}

/// Bytes in a character starting with `lead` (a lead byte that passed validation).
fn width(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

impl Utf8Check {
    pub fn new() -> Utf8Check {
        Utf8Check::default()
    }

    /// Checks the next piece.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Invalid> {
        if self.len > 0 {
            let len = self.len as usize;
            let take = (width(self.pending[0]) - len).min(bytes.len());
            self.pending[len..len + take].copy_from_slice(&bytes[..take]);
            self.len += take as u8;
            match std::str::from_utf8(&self.pending[..self.len as usize]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_some() => return Err(Invalid),
                // Still short of a whole character: `bytes` is used up.
                Err(_) => return Ok(()),
            }
            bytes = &bytes[take..];
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Invalid),
            Err(e) => {
                // The piece ends inside a character whose start is valid so far.
                let tail = &bytes[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Checks that the text did not end inside a character.
    pub fn finish(&mut self) -> Result<(), Invalid> {
        let complete = self.len == 0;
        self.len = 0;
        if complete {
            Ok(())
        } else {
            Err(Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at every pair of points; returns whether all splits agree on
    /// `valid`, and for invalid text fail no later than the piece holding the bad byte.
    fn check_all_splits(bytes: &[u8], valid: bool) {
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut check = Utf8Check::new();
                let result = check
                    .feed(&bytes[..a])
                    .and_then(|()| check.feed(&bytes[a..b]))
                    .and_then(|()| check.feed(&bytes[b..]))
                    .and_then(|()| check.finish());
                assert_eq!(result.is_ok(), valid, "{bytes:x?} split at {a}, {b}");
            }
        }
    }

    #[test]
    fn valid_text_in_any_pieces() {
        check_all_splits("κόσμε-héllo-€-𝄞".as_bytes(), true);
        check_all_splits(b"", true);
    }

    #[test]
    fn invalid_text_in_any_pieces() {
        for bad in [
            &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..],
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xff",
            b"ab\xe2\x82",
            b"\xed\xbf\xbf",
        ] {
            check_all_splits(bad, false);
        }
    }

    #[test]
    fn fails_at_the_first_impossible_byte() {
        // 0xF4 0x90 starts no valid character: known at the second byte, before the rest.
        let mut check = Utf8Check::new();
        assert_eq!(check.feed(b"ok \xf4"), Ok(()));
        assert_eq!(check.feed(b"\x90"), Err(Invalid));
        let mut check = Utf8Check::new();
        assert_eq!(
            check.feed(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"),
            Ok(())
        );
        assert_eq!(check.feed(b"\xf4\x90\x80\x80"), Err(Invalid));
        // A piece ending in a valid start waits.
        let mut check = Utf8Check::new();
        assert_eq!(check.feed(b"\xe2\x82"), Ok(()));
        assert_eq!(check.feed(b"\xac"), Ok(()));
        assert_eq!(check.finish(), Ok(()));
    }
}

//! The WebSocket frame decoder over arbitrary client bytes, with and without permessage-deflate:
//! no panic, no message past the size limit, and the same events whether the bytes come whole
//! or split at a point the input chooses (and, without compression, the same failure).
#![no_main]

use _ferrocorn::http::ws::deflate;
use _ferrocorn::http::ws::frame::{Decoder, Event, Failure};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;

/// The events of `pieces` fed in order, up to the first failure.
fn events(decoder: &mut Decoder, pieces: &[&[u8]]) -> (Vec<Event>, Option<Failure>) {
    let mut events = Vec::new();
    let mut buffered = Vec::new();
    for piece in pieces {
        buffered.extend_from_slice(piece);
        loop {
            match decoder.decode(&buffered) {
                Ok((used, event)) => {
                    assert!(used <= buffered.len());
                    buffered.drain(..used);
                    match event {
                        Some(event) => events.push(event),
                        None => break,
                    }
                }
                Err(failure) => return (events, Some(failure)),
            }
        }
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split).min(data.len());
    let params = deflate::negotiate([&b"permessage-deflate"[..]]);
    for deflate in [None, params.as_ref()] {
        let whole = events(&mut Decoder::new(LIMIT, deflate), &[data]);
        let split = events(&mut Decoder::new(LIMIT, deflate), &[&data[..cut], &data[cut..]]);
        // The same messages either way; a failure either way too, though not always the same
        // one: a corrupt compressed text message fails as invalid UTF-8 (1007) when a split
        // lets the inflated prefix be checked first, as invalid compressed data (1002) whole.
        assert_eq!(whole.0, split.0);
        assert_eq!(whole.1.is_some(), split.1.is_some());
        if deflate.is_none() {
            assert_eq!(whole.1, split.1);
        }
        for event in &whole.0 {
            match event {
                Event::Text(text) => assert!(text.len() <= LIMIT),
                Event::Binary(data) => assert!(data.len() <= LIMIT),
                Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
                Event::Close(_) => {}
            }
        }
    }
});

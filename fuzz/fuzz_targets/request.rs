//! Request parsing over arbitrary bytes: the head parser, then the body decoder over what
//! follows the head. Asserts no panic, and that feeding the input whole or split gives the
//! same result.
#![no_main]

use _ferrocorn::http::head::{self, Limits};
use _ferrocorn::http::{BodyDecoder, HttpError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let limits = limits(flags);
    let Ok(Some((parsed, framing, used))) = head::parse(input, &limits) else {
        return;
    };
    assert!(used <= input.len());
    // The head alone, without what follows it, parses to the same head.
    match head::parse(&input[..used], &limits) {
        Ok(Some((again, again_framing, n))) => {
            assert_eq!(n, used);
            assert_eq!(again, parsed);
            assert_eq!(again_framing, framing);
        }
        other => panic!(
            "head parses whole but not alone: {:?}",
            other.map(|o| o.map(|h| h.2))
        ),
    }
    let rest = &input[used..];
    let whole = decode_whole(framing.body, rest);
    // Split the body at a point chosen by the input itself, and at every byte when short.
    let split = (flags as usize * 7919) % (rest.len() + 1);
    assert_same(&whole, &decode_split(framing.body, rest, &[split]));
    if rest.len() <= 64 {
        let every: Vec<usize> = (1..rest.len()).collect();
        assert_same(&whole, &decode_split(framing.body, rest, &every));
    }
});

fn limits(flags: u8) -> Limits {
    let mut limits = if flags & 0x80 != 0 {
        Limits::new(64, 4, 64)
    } else {
        Limits::default()
    };
    limits.permit_unconventional_http_method = flags & 1 != 0;
    limits.permit_unconventional_http_version = flags & 2 != 0;
    limits.casefold_http_method = flags & 4 != 0;
    limits.permit_obsolete_folding = flags & 8 != 0;
    limits.strip_header_spaces = flags & 16 != 0;
    limits
}

/// (body, consumed, done) or the error.
type Outcome = Result<(Vec<u8>, usize, bool), HttpError>;

fn decode_whole(framing: head::Framing, input: &[u8]) -> Outcome {
    let mut decoder = BodyDecoder::new(framing);
    let mut out = Vec::new();
    let d = decoder.decode(input, &mut out, usize::MAX)?;
    assert!(d.consumed <= input.len());
    Ok((out, d.consumed, d.done))
}

/// Feeds `input` in pieces cut at `cuts`, keeping what a call left unconsumed for the next.
fn decode_split(framing: head::Framing, input: &[u8], cuts: &[usize]) -> Outcome {
    let mut decoder = BodyDecoder::new(framing);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut done = false;
    let mut ends: Vec<usize> = cuts.to_vec();
    ends.push(input.len());
    for end in ends {
        if done || end < consumed {
            continue;
        }
        let d = decoder.decode(&input[consumed..end], &mut out, usize::MAX)?;
        assert!(consumed + d.consumed <= end);
        consumed += d.consumed;
        done = d.done;
    }
    Ok((out, consumed, done))
}

fn assert_same(whole: &Outcome, split: &Outcome) {
    match (whole, split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "whole and split feeding disagree"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "whole and split feeding disagree: {:?} vs {:?}",
            a.as_ref().map(|o| o.1),
            b.as_ref().map(|o| o.1)
        ),
    }
}

//! The PROXY protocol header parser over arbitrary bytes, in every mode: no panic, a header
//! never claims more bytes than it was given, and the header alone parses the same.
#![no_main]

use _ferrocorn::http::proxy::{self, Mode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mode in [Mode::Off, Mode::V1, Mode::V2, Mode::Auto] {
        let Ok(Some((info, used))) = proxy::parse(data, mode) else {
            continue;
        };
        assert!(used <= data.len());
        if info.is_none() {
            assert_eq!(used, 0);
            continue;
        }
        match proxy::parse(&data[..used], mode) {
            Ok(Some((again, n))) => {
                assert_eq!(n, used);
                assert_eq!(again, info);
            }
            _ => panic!("a PROXY header parses with what follows it but not alone"),
        }
        // Every shorter prefix either asks for more or is refused; it never yields a header.
        for cut in 0..used.min(256) {
            if let Ok(Some((Some(_), _))) = proxy::parse(&data[..cut], mode) {
                panic!("a prefix of {cut} bytes parsed as a complete PROXY header");
            }
        }
    }
});

//! Fuzzes the WebSocket port's reading of a request head: any bytes, whole or cut short. It must
//! never panic; a complete head's length is within what was read and gives the same verdict
//! alone as with what follows it; a partial head stays partial when cut shorter; and every
//! refusal is a well-formed HTTP response.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitaya_host::transport::upgrade::{MAX_HEAD, Parsed, Verdict, parse, refusal};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    match parse(bytes) {
        Parsed::Complete { verdict, len } => {
            assert!(len <= bytes.len());
            assert_eq!(
                parse(&bytes[..len]),
                Parsed::Complete {
                    verdict: verdict.clone(),
                    len
                }
            );
            if let Verdict::Refuse(why) = verdict {
                let answer = refusal(why);
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut response = httparse::Response::new(&mut headers);
                assert!(matches!(
                    response.parse(answer.as_bytes()),
                    Ok(httparse::Status::Complete(_))
                ));
            }
        }
        Parsed::Partial => {
            assert!(bytes.len() < MAX_HEAD);
            let shorter = &bytes[..bytes.len() * usize::from(cut) / 255];
            assert_eq!(parse(shorter), Parsed::Partial);
        }
    }
});

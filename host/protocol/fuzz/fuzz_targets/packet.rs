//! Fuzzes the packet decoder: the lengths of what it takes add up, and re-encoding a decoded
//! packet gives back exactly the bytes it consumed.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pitaya_protocol::{HEADER_LEN, PacketDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&limit, stream)) = data.split_first() else {
        return;
    };
    let decoder = PacketDecoder::new(usize::from(limit) * 4);
    let mut buf = BytesMut::from(stream);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(packet)) => {
                assert!(packet.body.len() <= decoder.max_body());
                assert_eq!(before - buf.len(), HEADER_LEN + packet.body.len());
                let mut again = BytesMut::new();
                packet
                    .encode(&mut again)
                    .expect("a decoded packet re-encodes");
                assert_eq!(&again[..], &stream[consumed..consumed + again.len()]);
                consumed += again.len();
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf.len(), before, "need-more and errors consume nothing");
                assert_eq!(consumed + buf.len(), stream.len());
                break;
            }
        }
    }
});

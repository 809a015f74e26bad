//! Criterion benches of the codec: packet framing, message decode and encode by payload size
//! (16 B, 256 B, 4 KiB, 64 KiB), zlib in and out at 4 KiB, and one Request through the
//! connection state machine. Run with `cargo bench -p pitaya-protocol`.

use std::hint::black_box;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pitaya_protocol::{
    Connection, ConnectionConfig, EncodeOptions, Event, HEADER_LEN, MessageType, PacketDecoder,
    PacketType, RouteDict, decode_message, decode_message_bytes, deflate, encode_message,
    encode_packet, encode_push, encode_response, inflate,
};

/// Payload sizes every size-dependent bench runs at.
const SIZES: [usize; 4] = [16, 256, 4 * 1024, 64 * 1024];
/// The payload size of the zlib benches.
const ZLIB_SIZE: usize = 4 * 1024;
/// Inflate cap (the host's default).
const MAX_INFLATED: usize = 1 << 20;

/// A JSON-like payload of exactly `size` bytes that looks like game state (numbers and short
/// names, deterministic), so that zlib sees realistic, not trivially repetitive, input.
fn payload(size: usize) -> Vec<u8> {
    let mut seed: u32 = 0x2545_f491;
    let mut next = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        seed >> 8
    };
    let mut out = b"{\"players\":[".to_vec();
    let mut index = 0;
    while out.len() < size {
        let entry = format!(
            "{{\"id\":{},\"name\":\"p{}\",\"x\":{}.{},\"y\":{}.{},\"hp\":{}}},",
            next() % 100_000,
            index,
            next() % 1000,
            next() % 100,
            next() % 1000,
            next() % 100,
            next() % 101
        );
        out.extend_from_slice(entry.as_bytes());
        index += 1;
    }
    // Close the array and object, cutting the last entries to fit exactly.
    out.truncate(size.saturating_sub(2));
    out.extend_from_slice(b"]}");
    out.truncate(size);
    out
}

/// The body of a Data packet holding a Request to `room.join`.
fn request_body(payload: &[u8], compress: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_message(
        MessageType::Request,
        300,
        Some("room.join"),
        None,
        payload,
        false,
        compress,
        &mut out,
    )
    .expect("a bench request encodes");
    out.to_vec()
}

fn packet_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("packet_decode");
    let decoder = PacketDecoder::new(1 << 20);
    for size in SIZES {
        let mut wire = BytesMut::new();
        encode_packet(
            PacketType::Data,
            &request_body(&payload(size), false),
            &mut wire,
        )
        .expect("a bench packet encodes");
        let wire = wire.freeze();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            b.iter_batched(
                || BytesMut::from(wire.as_ref()),
                |mut buf| black_box(decoder.decode(&mut buf)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn message_decode(c: &mut Criterion) {
    let dict = RouteDict::default();
    let mut group = c.benchmark_group("decode_message");
    for size in SIZES {
        let body = request_body(&payload(size), false);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| black_box(decode_message(black_box(body), &dict, MAX_INFLATED)));
        });
    }
    group.finish();

    // What the host's connection uses: the payload shares the packet's memory.
    let mut group = c.benchmark_group("decode_message_bytes");
    for size in SIZES {
        let body = Bytes::from(request_body(&payload(size), false));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| black_box(decode_message_bytes(black_box(body), &dict, MAX_INFLATED)));
        });
    }
    group.finish();
}

fn response_encode(c: &mut Criterion) {
    let opts = EncodeOptions::default();
    let mut group = c.benchmark_group("encode_response");
    for size in SIZES {
        let payload = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            let mut out = BytesMut::with_capacity(size + 64);
            b.iter(|| {
                out.clear();
                black_box(encode_response(
                    300,
                    black_box(payload),
                    false,
                    &opts,
                    &mut out,
                ))
            });
        });
    }
    group.finish();
}

fn push_encode(c: &mut Criterion) {
    let opts = EncodeOptions::default();
    let dict = RouteDict::from_routes(["onMessage", "onMembers"]);
    let mut group = c.benchmark_group("encode_push");
    for size in SIZES {
        let payload = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            let mut out = BytesMut::with_capacity(size + 64);
            b.iter(|| {
                out.clear();
                black_box(encode_push(
                    "onMessage",
                    black_box(payload),
                    &dict,
                    &opts,
                    &mut out,
                ))
            });
        });
    }
    group.finish();
}

fn zlib(c: &mut Criterion) {
    let plain = payload(ZLIB_SIZE);
    let compressed = deflate(&plain);
    let mut group = c.benchmark_group("zlib_4KiB");
    group.throughput(Throughput::Bytes(ZLIB_SIZE as u64));
    group.bench_function("deflate", |b| {
        b.iter(|| black_box(deflate(black_box(&plain))))
    });
    // For comparison: the fastest zlib level (the codec uses the default level, 6).
    group.bench_function("deflate_level1", |b| {
        b.iter(|| {
            let mut encoder = flate2::write::ZlibEncoder::new(
                Vec::with_capacity(ZLIB_SIZE),
                flate2::Compression::fast(),
            );
            let _ = encoder.write_all(black_box(&plain));
            black_box(encoder.finish())
        });
    });
    group.bench_function("inflate", |b| {
        b.iter(|| black_box(inflate(black_box(&compressed), MAX_INFLATED)));
    });
    // The same at the API level: a compressed Request in, a compressed Response out.
    let dict = RouteDict::default();
    let body = request_body(&plain, true);
    assert_ne!(body[0] & 0x10, 0, "the bench payload must compress");
    group.bench_function("decode_message_compressed", |b| {
        b.iter(|| black_box(decode_message(black_box(&body), &dict, MAX_INFLATED)));
    });
    let opts = EncodeOptions {
        compress: true,
        ..EncodeOptions::default()
    };
    let mut out = BytesMut::with_capacity(ZLIB_SIZE + 64);
    group.bench_function("encode_response_compressed", |b| {
        b.iter(|| {
            out.clear();
            black_box(encode_response(
                300,
                black_box(&plain),
                false,
                &opts,
                &mut out,
            ))
        });
    });
    group.finish();
    let mut fast = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = fast.write_all(&plain);
    let fast_len = fast.finish().map(|v| v.len()).unwrap_or_default();
    eprintln!(
        "zlib_4KiB: {} bytes deflate to {} at the default level, {} at level 1",
        plain.len(),
        compressed.len(),
        fast_len
    );
}

/// A connection in the Working state, as the host holds one after the handshake.
fn working_connection(config: &Arc<ConnectionConfig>, now: Instant) -> Connection {
    let mut conn = Connection::new(config.clone(), Arc::new(RouteDict::default()), now);
    let mut hello = BytesMut::new();
    encode_packet(PacketType::Handshake, b"{}", &mut hello).expect("handshake encodes");
    conn.receive(&hello, now).expect("handshake accepted");
    while conn.poll_event().is_some() {}
    conn.accept_handshake().expect("handshake accepted");
    while conn.poll_transmit().is_some() {}
    conn.receive(&[PacketType::HandshakeAck as u8, 0, 0, 0], now)
        .expect("ack accepted");
    while conn.poll_event().is_some() {}
    conn
}

fn connection_receive(c: &mut Criterion) {
    let config = Arc::new(ConnectionConfig {
        max_packet_body: 1 << 20,
        ..ConnectionConfig::default()
    });
    let now = Instant::now();
    let mut group = c.benchmark_group("connection_receive_request");
    for size in SIZES {
        let mut wire = BytesMut::new();
        encode_packet(
            PacketType::Data,
            &request_body(&payload(size), false),
            &mut wire,
        )
        .expect("a bench packet encodes");
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let mut conn = working_connection(&config, now);
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            b.iter(|| {
                let received = conn.receive(black_box(wire), now);
                let event = conn.poll_event();
                debug_assert!(matches!(event, Some(Event::Message(_))));
                black_box((received, event))
            });
        });
        assert_eq!(
            wire.len() - HEADER_LEN,
            request_body(&payload(size), false).len()
        );
    }
    group.finish();
}

criterion_group!(
    codec,
    packet_decode,
    message_decode,
    response_encode,
    push_encode,
    zlib,
    connection_receive
);
criterion_main!(codec);

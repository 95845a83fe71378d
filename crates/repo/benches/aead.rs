//! AEAD candidates for blob encryption, side by side: XChaCha20-Poly1305 (chosen) vs
//! AES-256-GCM, on 1 MiB blobs (the average chunk). Run: `cargo bench -p lifeboat-repo --bench aead`.
//!
//! A plain timing loop (no harness dependency): prints MiB/s per candidate.

use std::hint::black_box;
use std::time::Instant;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const BLOB: usize = 1 << 20;
const ROUNDS: usize = 512;

fn measure(name: &str, mut f: impl FnMut(&mut Vec<u8>)) {
    let mut buf = vec![7u8; BLOB];
    for _ in 0..16 {
        f(&mut buf);
    }
    let t = Instant::now();
    for _ in 0..ROUNDS {
        f(&mut buf);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{name:<24} {:>8.0} MiB/s",
        (ROUNDS * BLOB) as f64 / secs / (1 << 20) as f64
    );
}

fn main() {
    let key = [3u8; 32];
    let x = XChaCha20Poly1305::new((&key).into());
    measure("xchacha20poly1305 seal", |b| {
        let tag = x
            .encrypt_in_place_detached(XNonce::from_slice(&[1; 24]), b"aad", b)
            .expect("seal");
        black_box(tag);
    });
    let g = Aes256Gcm::new((&key).into());
    measure("aes-256-gcm seal", |b| {
        let tag = g
            .encrypt_in_place_detached(Nonce::from_slice(&[1; 12]), b"aad", b)
            .expect("seal");
        black_box(tag);
    });
    let id_key = [9u8; 32];
    measure("blake3 keyed (blob id)", |b| {
        black_box(blake3::keyed_hash(&id_key, b));
    });
    let mut z = zstd::bulk::Compressor::new(3).expect("zstd");
    let text: Vec<u8> = (0..BLOB)
        .map(|i| b"lifeboat backup log line 0123456789\n"[i % 36])
        .collect();
    measure("zstd-3 text", |_| {
        black_box(z.compress(&text).expect("zstd"));
    });
}

//! The fuzz targets (`switchboard::fuzz`) on stable: the committed corpus (`fuzz/corpus`,
//! grown by `cargo +nightly fuzz`) and, bounded in count, deterministic mutations of it.
//! `FUZZ_RUNS` sets the mutations per target (default 20,000); a failing input is printed with
//! the seed that made it. Each run draws a new seed (from the clock) unless `FUZZ_SEED` gives
//! one, so that more runs find new inputs; `FUZZ_SEED=N` replays a failure exactly.

use std::path::Path;

type Target = fn(&[u8]);

/// Tokens worth splicing in: the syntax each parser branches on.
const TOKENS: &[&[u8]] = &[
    b"/",
    b"//",
    b"\n",
    b"\r\n",
    b"\0",
    b"\x1b[",
    b"\xe2\x80\xae",
    b"\xff",
    b"{",
    b"}",
    b"\"",
    b":",
    b",",
    b"[",
    b"]",
    b"&",
    b"=",
    b"%",
    b"%FF",
    b"-",
    b"99999999999999999999",
    b"type",
    b"publish",
    b"join",
    b"since",
    b"limit",
    b"room",
    b"nick",
    b"/nick ",
    b"/join ",
    b"/msg ",
    b"/history ",
    b"/since ",
    b"/rooms ",
    b"/auth ",
    b"..",
    b"\x10",
    b"\x30",
    b"\x82",
    b"\xe0\x00",
    b"\x00\x04MQTT\x04",
    b"\x00\x04MQTT\x05",
    b"\xff\xff\xff\x7f",
    b"+",
    b"#",
    b"\x0a\x01",
    b"\x12\x00",
    b"\x22\x04\x0a\x00\x12\x00",
    b"1S",
    b"99999999m",
];

/// xorshift64*: the same mutations for the same seed, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.insert(at, rng.next() as u8),
            2 if !input.is_empty() => {
                let end = (at + rng.below(8)).min(input.len());
                input.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                input.splice(at..at, other[from..].iter().copied());
            }
            _ => {
                let n = rng.below(64);
                let byte = rng.next() as u8;
                input.splice(at..at, std::iter::repeat_n(byte, n));
            }
        }
    }
    input.truncate(4096);
}

fn run(name: &str, target: Target) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    corpus.sort();
    assert!(!corpus.is_empty(), "no corpus for {name}");
    let runs: usize = std::env::var("FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed = seed();
    let check = |input: &[u8]| {
        let caught = std::panic::catch_unwind(|| target(input));
        assert!(
            caught.is_ok(),
            "{name} failed on {:?} (FUZZ_SEED={seed} replays this run)",
            String::from_utf8_lossy(input)
        );
    };
    for input in &corpus {
        check(input);
    }
    let mut rng = stream(name, seed);
    for _ in 0..runs {
        let mut input = corpus[rng.below(corpus.len())].clone();
        mutate(&mut rng, &corpus, &mut input);
        check(&input);
    }
}

/// `FUZZ_SEED`, else one from the clock, so that every run tries new mutations.
fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        })
}

/// Each target its own stream from the one seed: the name's FNV-1a hash mixed in (its
/// length alone gave three targets the same inputs).
fn stream(name: &str, seed: u64) -> Rng {
    let named = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Rng((seed ^ named) | 1)
}

#[test]
fn streams_differ_by_target_and_seed() {
    let first = |name: &str, seed: u64| stream(name, seed).next();
    // Same-length names (envelope, http_query...) no longer share a stream.
    assert_ne!(first("envelope", 1), first("abcdefgh", 1));
    assert_ne!(first("envelope", 1), first("envelope", 2));
    assert_eq!(first("envelope", 7), first("envelope", 7));
}

#[test]
fn line_decoder() {
    run("line_decoder", switchboard::fuzz::line_decoder);
}

#[test]
fn chat_command() {
    run("chat_command", switchboard::fuzz::chat_command);
}

#[test]
fn envelope() {
    run("envelope", switchboard::fuzz::envelope);
}

#[test]
fn http_query() {
    run("http_query", switchboard::fuzz::http_query);
}

#[test]
fn mqtt_packets() {
    run("mqtt_packets", switchboard::fuzz::mqtt_packets);
}

#[test]
fn grpc_frames() {
    run("grpc_frames", switchboard::fuzz::grpc_frames);
}

//! Issue 19: fuzzing the HTTP/1 parsers at the edge, on stable Rust.
//!
//! The targets live in `baton::proxy::h1::fuzz` (what each one checks is
//! written there). This file drives them:
//! - `corpus_replays`: every input under `fuzz/corpus/<target>/` (the
//!   seeds, and every input a fuzz run ever failed on) is run again.
//! - `fuzz_<target>`: a mutation run of `BATON_FUZZ_SECONDS` (default 2)
//!   from the corpus and from requests generated out of HTTP's grammar
//!   with hostile pieces, from `BATON_FUZZ_SEED` (default 19). An input that fails is written to the corpus
//!   (so the replay keeps it) and the test fails naming the file.
//!   `fuzz/run.sh` runs them for longer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_proxy::h1::fuzz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TARGETS: [&str; 5] = [
    "request_head",
    "answer",
    "framing",
    "differential",
    "normalise",
];

fn run(target: &str, data: &[u8], rt: &tokio::runtime::Runtime) {
    match target {
        "request_head" => fuzz::request_head(data),
        "answer" => fuzz::answer(data, rt),
        "framing" => fuzz::framing(data),
        "differential" => fuzz::differential(data, rt),
        "normalise" => fuzz::normalise(data),
        other => panic!("no target {other}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut inputs: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            (path, data)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn corpus_replays() {
    let rt = runtime();
    for target in TARGETS {
        let inputs = corpus(target);
        assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty");
        for (path, data) in inputs {
            if catch_unwind(AssertUnwindSafe(|| run(target, &data, &rt))).is_err() {
                panic!("{target} fails on {}", path.display());
            }
        }
    }
}

/// Pieces of HTTP/1 that parsers disagree about.
const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"=",
    b"\"",
    b"\0",
    b"\x0b",
    b"\x0c",
    b"\xc2\xa0",
    b"\xff",
    b"+",
    b"-",
    b"0",
    b"00",
    b"5",
    b"0x",
    b"ffffffffffffffff",
    b"99999999999999999999",
    b"chunked",
    b"Chunked",
    b"identity",
    b"gzip",
    b"Transfer-Encoding",
    b"Content-Length",
    b"Host",
    b"Connection",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"Upgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"CONNECT ",
    b"http://a.example",
    b"https://b.example:8443/x",
    b"*",
    b"@",
    b"/",
    b"?",
    b"#",
    b"%00",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
    b"HTTP/1.0 200 OK\r\n",
];

const METHODS: &[&str] = &[
    "GET", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT", "DELETE", "PATCH",
];
const TARGET_FORMS: &[&str] = &[
    "/",
    "/p?q=1",
    "http://a.example/p",
    "HTTP://A.example",
    "https://b.example:8443",
    "http://u@c.example/",
    "*",
    "a.example:443",
    "/a b",
    "//x",
    "/a/../b",
    "/%2e%2e/x",
    "/a/%2E/b?q=/../",
];
const FIELDS: &[&str] = &[
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
    "Expect",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Cookie",
    "X-Forwarded-For",
    "Proxy-Connection",
    "X-A",
    "Transfer_Encoding",
    "Content-Length ",
    " Host",
];
const VALUES: &[&str] = &[
    "x",
    "a.example",
    "0",
    "5",
    "005",
    "+5",
    "-1",
    "5, 5",
    "5 5",
    "chunked",
    "Chunked",
    "chunked, chunked",
    "gzip, chunked",
    "identity",
    "close",
    "keep-alive",
    "content-length",
    "transfer-encoding",
    "host",
    "upgrade",
    "100-continue",
    "",
    "a@b",
    "websocket",
];

/// A request stream out of HTTP's grammar, with hostile pieces.
fn generate(rng: &mut StdRng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let method = METHODS[rng.random_range(0..METHODS.len())];
        let target = TARGET_FORMS[rng.random_range(0..TARGET_FORMS.len())];
        let version = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2"][rng.random_range(0..4)];
        let eol: &str = if rng.random_bool(0.9) { "\r\n" } else { "\n" };
        out.extend_from_slice(format!("{method} {target} {version}{eol}").as_bytes());
        if rng.random_bool(0.9) {
            out.extend_from_slice(format!("Host: x{eol}").as_bytes());
        }
        for _ in 0..rng.random_range(0..5) {
            let name = FIELDS[rng.random_range(0..FIELDS.len())];
            let value = VALUES[rng.random_range(0..VALUES.len())];
            out.extend_from_slice(format!("{name}: {value}{eol}").as_bytes());
        }
        out.extend_from_slice(eol.as_bytes());
        match rng.random_range(0..4) {
            0 => {}
            1 => out.extend_from_slice(b"hello"),
            2 => out.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n"),
            _ => {
                for _ in 0..rng.random_range(0..3) {
                    let size = rng.random_range(0..20usize);
                    out.extend_from_slice(format!("{size:x}").as_bytes());
                    if rng.random_bool(0.2) {
                        out.extend_from_slice(b";ext=1");
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend(std::iter::repeat_n(b'a', size));
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                if rng.random_bool(0.3) {
                    out.extend_from_slice(b"X-Sum: 1\r\n");
                }
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out
}

/// Path segments that normalisation must get right.
const SEGMENTS: &[&str] = &[
    ".", "..", "%2e", "%2E%2e", ".%2e", "", "a", "%61", "%2f", "%2F", "%zz", "%4", "b.c", "~",
    "%7E", "%7e", "...", "%25", "%00", "\\", ";x", "%c3%a9",
];

/// A request target made of those segments, and sometimes a query.
fn generate_path(rng: &mut StdRng) -> Vec<u8> {
    let mut out = String::new();
    if rng.random_bool(0.95) {
        out.push('/');
    }
    let n = rng.random_range(0..8);
    for i in 0..n {
        if i > 0 {
            out.push('/');
        }
        out.push_str(SEGMENTS[rng.random_range(0..SEGMENTS.len())]);
    }
    if rng.random_bool(0.2) {
        out.push_str("?q=/../%zz");
    }
    out.into_bytes()
}

/// An answer out of HTTP's grammar, with a leading byte whose low bit says
/// the request was HEAD.
fn generate_answer(rng: &mut StdRng) -> Vec<u8> {
    let mut out = vec![rng.random::<u8>()];
    let status = [
        "200 OK",
        "204 No Content",
        "304 Not Modified",
        "100 Continue",
        "101 Switching",
        "404 Not Found",
    ][rng.random_range(0..6)];
    let version = ["HTTP/1.1", "HTTP/1.0"][rng.random_range(0..2)];
    out.extend_from_slice(format!("{version} {status}\r\n").as_bytes());
    for _ in 0..rng.random_range(0..4) {
        let name = FIELDS[rng.random_range(0..FIELDS.len())];
        let value = VALUES[rng.random_range(0..VALUES.len())];
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    match rng.random_range(0..3) {
        0 => out.extend_from_slice(b"hello"),
        1 => out.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n"),
        _ => {}
    }
    out
}

fn mutate(rng: &mut StdRng, data: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=data.len());
        match rng.random_range(0..7) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 => data.insert(at, rng.random()),
            2 if !data.is_empty() => {
                let end = (at + rng.random_range(1..8)).min(data.len());
                data.drain(at.min(end)..end);
            }
            3 | 4 => {
                let piece = DICTIONARY[rng.random_range(0..DICTIONARY.len())];
                data.splice(at..at, piece.iter().copied());
            }
            5 if !data.is_empty() => {
                let start = rng.random_range(0..data.len());
                let end = (start + rng.random_range(1..32)).min(data.len());
                let piece = data[start..end].to_vec();
                data.splice(at..at, piece);
            }
            _ if !pool.is_empty() => {
                let other = &pool[rng.random_range(0..pool.len())];
                let from = rng.random_range(0..=other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Mutates and generates inputs for `target` until the time is up.
fn fuzz(target: &str) {
    let seconds: u64 = std::env::var("BATON_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // `cargo test` fuzzes from a fixed seed, so that a test run is
    // repeatable; fuzz/run.sh gives each run a seed of its own.
    let seed: u64 = std::env::var("BATON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    let mut rng = StdRng::seed_from_u64(seed);
    let rt = runtime();
    let pool: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, d)| d).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut execs = 0u64;
    // Quiet: a failing input is reported once, below.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = None;
    while Instant::now() < deadline && failed.is_none() {
        for _ in 0..64 {
            let mut data = match rng.random_range(0..3) {
                0 if target == "answer" => generate_answer(&mut rng),
                0 if target == "normalise" => generate_path(&mut rng),
                0 => generate(&mut rng),
                _ => pool[rng.random_range(0..pool.len())].clone(),
            };
            if rng.random_bool(0.8) {
                mutate(&mut rng, &mut data, &pool);
            }
            execs += 1;
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| run(target, &data, &rt))) {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failed = Some((data, why));
                break;
            }
        }
    }
    std::panic::set_hook(hook);
    println!("fuzz {target}: {execs} inputs in {seconds} s (seed {seed})");
    if let Some((data, why)) = failed {
        let path = corpus_dir(target).join(format!("failed-{:016x}", fnv(&data)));
        std::fs::write(&path, &data).expect("write the failing input");
        panic!(
            "{target} fails on {} (kept in the corpus): {why}\n{:?}",
            path.display(),
            String::from_utf8_lossy(&data)
        );
    }
}

#[test]
fn fuzz_request_head() {
    fuzz("request_head");
}

#[test]
fn fuzz_answer() {
    fuzz("answer");
}

#[test]
fn fuzz_framing() {
    fuzz("framing");
}

#[test]
fn fuzz_normalise() {
    fuzz("normalise");
}

#[test]
fn fuzz_differential() {
    fuzz("differential");
}

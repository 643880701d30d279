//! Decoder throughput on a summaries JSONL file, without DataFusion: the whole schema, and
//! the projection `topic, concerning_score` that `SELECT topic, count(*),
//! avg(concerning_score) FROM summaries GROUP BY topic` scans (every other field still
//! validated). Lines are split and decoded as `src/scan/jsonl.rs` does.
//!
//! `cargo run -p ckpt-core --release --example decode_throughput -- FILE [ROUNDS [all|projected]]`

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::Schema;
use ckpt_core::CheckpointKind;
use ckpt_core::jsonl::{DecodeOptions, JsonlDecoder};

fn decode(body: &[u8], output: Arc<Schema>, full: &Schema) -> usize {
    let mut d = JsonlDecoder::new(output, full, "bench.jsonl", DecodeOptions::default());
    let mut rows = 0;
    let mut start = 0;
    for (n, end) in memchr::memchr_iter(b'\n', body).enumerate() {
        d.decode_line(&body[start..end], n as u64 + 1)
            .expect("the bench file decodes");
        start = end + 1;
        if d.is_full() {
            rows += d.flush().expect("flush").map_or(0, |b| b.num_rows());
        }
    }
    rows + d.flush().expect("flush").map_or(0, |b| b.num_rows())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: decode_throughput FILE [ROUNDS]");
    let rounds: usize = args.next().map_or(3, |r| r.parse().expect("ROUNDS"));
    let only = args.next();
    let body = std::fs::read(&path).expect("readable file");
    let full = CheckpointKind::Summaries.schema();
    let projected = Arc::new(
        full.project(&[
            full.index_of("topic").expect("topic"),
            full.index_of("concerning_score").expect("concerning_score"),
        ])
        .expect("projection"),
    );
    let mb = body.len() as f64 / 1e6;
    for (mode, name, output) in [
        ("all", "all columns", Arc::clone(&full)),
        ("projected", "topic, concerning_score", projected),
    ] {
        if only.as_deref().is_some_and(|o| o != mode) {
            continue;
        }
        let mut best = f64::INFINITY;
        let mut rows = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            rows = decode(&body, Arc::clone(&output), &full);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:>24}: {rows} rows, best of {rounds} {best:.3} s, {:.0} MB/s",
            mb / best
        );
    }
}

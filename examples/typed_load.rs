//! Loads every conversation summary of a JSONL checkpoint root into Rust values, the way
//! Kura's `JSONLCheckpointManager(dir).load_checkpoint("summaries", ConversationSummary)`
//! loads them into pydantic models. `scripts/bench` (B4) times it against Kura.
//!
//!   cargo run --release --example typed_load -- DIR
//!
//! Prints the number of summaries and of embedding values loaded.

use ckpt::{CheckpointManager, ConversationSummary};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: typed_load DIR   (DIR holds summaries.jsonl)");
        return std::process::ExitCode::from(2);
    };
    let loaded = match CheckpointManager::jsonl(&dir) {
        Ok(m) => m.load::<ConversationSummary>("summaries").await,
        Err(e) => Err(e),
    };
    match loaded {
        Ok(Some(summaries)) => {
            let values: usize = summaries
                .iter()
                .map(|s| s.embedding.as_ref().map_or(0, Vec::len))
                .sum();
            println!("{} summaries, {values} embedding values", summaries.len());
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("error: no summaries checkpoint in {dir}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

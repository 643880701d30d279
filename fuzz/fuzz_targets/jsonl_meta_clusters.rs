//! JSONL decoding of meta_clusters checkpoints: the fuzzer's bytes are one file, split into lines.
#![no_main]
use ckpt_core::CheckpointKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ckpt_core::properties::decode_lines(
        CheckpointKind::MetaClusters,
        &ckpt_core::properties::split_lines(data),
    );
});

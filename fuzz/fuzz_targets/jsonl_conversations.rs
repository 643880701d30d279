//! JSONL decoding of conversations checkpoints: the fuzzer's bytes are one file, split into lines.
#![no_main]
use ckpt::CheckpointKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ckpt::properties::decode_lines(
        CheckpointKind::Conversations,
        &ckpt::properties::split_lines(data),
    );
});

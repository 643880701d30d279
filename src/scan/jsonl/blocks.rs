//! A span's bytes cut into blocks of whole lines ([`blocks`]) and a block decoded into
//! batches ([`decode_block`]), the unit of work a scan hands to a blocking thread.
//!
//! Blocks are what make a partition parallel and its memory bounded: each holds at most
//! a block size of lines (a longer line alone), as slices of the chunks read, and is
//! decoded with line numbers of its own, which the opener turns into the file's.

use bytes::{Bytes, BytesMut};
use ckpt_core::jsonl::{DecodeOptions, JsonlDecoder, SkippedLine};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::Result;

/// Newline-aligned pieces of a span. Each piece is a run of whole lines (the last piece of
/// a file may lack its final newline); pieces are slices of the chunks read, so bytes are
/// copied only for a line split across chunks.
///
/// Lines are numbered within the block while decoding, and the file's line numbers are put
/// in afterwards, in file order: the reader never scans a block just to count lines.
pub(super) struct Block {
    pub(super) pieces: Vec<Bytes>,
    /// The block holds the file's first line (where a BOM is allowed).
    pub(super) file_start: bool,
    /// Bytes of the pieces, accounted in the memory pool while the block is in flight.
    pub(super) bytes: usize,
}

/// What decoding a block gave: batches, lines skipped (`--on-error skip`, numbered within
/// the block), and how many lines it held.
pub(super) struct DecodedBlock {
    pub(super) batches: Vec<RecordBatch>,
    pub(super) skipped: Vec<SkippedLine>,
    pub(super) lines: u64,
}

/// Cuts a byte stream into blocks of at most `block_bytes` bytes of whole lines (a block
/// holds one line at least: a longer line is a block of its own). A last line without a
/// newline is its own end. `file_start`: the stream begins with the file's first line.
///
/// Chunks of the stream are cut to the block size, whatever their own size: the store's
/// chunks can be several MiB (read-ahead), and a block that took a whole chunk would
/// outgrow the share of a small memory pool the scan reserved for it.
pub(super) fn blocks(
    bytes: BoxStream<'static, Result<Bytes>>,
    file_start: bool,
    block_bytes: usize,
) -> BoxStream<'static, Result<Block>> {
    struct State {
        bytes: BoxStream<'static, Result<Bytes>>,
        /// What is left of a chunk after the last block was cut from it.
        pending: Option<Bytes>,
        /// Whole lines gathered for the next block, and their size.
        pieces: Vec<Bytes>,
        size: usize,
        /// The start of a line whose end has not been read yet.
        partial: BytesMut,
        file_start: bool,
        block_bytes: usize,
        /// The byte stream has ended (it is not polled again).
        ended: bool,
        done: bool,
    }
    impl State {
        fn take_block(&mut self) -> Block {
            let bytes = self.pieces.iter().map(Bytes::len).sum();
            self.size = 0;
            Block {
                pieces: std::mem::take(&mut self.pieces),
                file_start: std::mem::replace(&mut self.file_start, false),
                bytes,
            }
        }

        /// Takes the whole lines of `chunk` that fit in the block (the partial line before
        /// them first); returns what is left of the chunk when the block is full and whole
        /// lines remain, else keeps the tail as the partial line.
        fn take_lines(&mut self, chunk: Bytes) -> Option<Bytes> {
            let Some(first) = memchr::memchr(b'\n', &chunk) else {
                self.partial.extend_from_slice(&chunk);
                return None;
            };
            let mut at = 0;
            if !self.partial.is_empty() {
                if !self.pieces.is_empty()
                    && self.size + self.partial.len() + first + 1 > self.block_bytes
                {
                    // The block is full: the line the chunk ends goes in the next one.
                    return Some(chunk);
                }
                self.partial.extend_from_slice(&chunk[..=first]);
                let line = std::mem::take(&mut self.partial).freeze();
                self.size += line.len();
                self.pieces.push(line);
                at = first + 1;
            }
            let rest = &chunk[at..];
            let Some(last) = memchr::memrchr(b'\n', rest) else {
                self.partial.extend_from_slice(rest);
                return None;
            };
            let room = self.block_bytes.saturating_sub(self.size);
            // The end of the last line to take, within `rest`.
            let end = if last < room {
                Some(last)
            } else {
                match memchr::memrchr(b'\n', &rest[..room.min(rest.len())]) {
                    Some(i) => Some(i),
                    // Not one line fits: an empty block takes the first line whole.
                    None if self.pieces.is_empty() => memchr::memchr(b'\n', rest),
                    None => None,
                }
            };
            if let Some(end) = end {
                self.size += end + 1;
                self.pieces.push(chunk.slice(at..at + end + 1));
                at += end + 1;
            }
            if memchr::memchr(b'\n', &chunk[at..]).is_some() {
                return Some(chunk.slice(at..));
            }
            self.partial.extend_from_slice(&chunk[at..]);
            None
        }
    }
    let state = State {
        bytes,
        pending: None,
        pieces: Vec::new(),
        size: 0,
        partial: BytesMut::new(),
        file_start,
        block_bytes,
        ended: false,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let next = match st.pending.take() {
                Some(rest) => Some(Ok(rest)),
                None if st.ended => None,
                None => st.bytes.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    if let Some(rest) = st.take_lines(chunk) {
                        // The block is full and whole lines are left for the next.
                        st.pending = Some(rest);
                        let block = st.take_block();
                        return Some((Ok(block), st));
                    }
                    if st.size >= st.block_bytes {
                        let block = st.take_block();
                        return Some((Ok(block), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.ended = true;
                    if !st.partial.is_empty() {
                        if !st.pieces.is_empty() && st.size + st.partial.len() > st.block_bytes {
                            // The last line goes in a block of its own.
                            let block = st.take_block();
                            return Some((Ok(block), st));
                        }
                        let line = std::mem::take(&mut st.partial).freeze();
                        st.pieces.push(line);
                    }
                    st.done = true;
                    if st.pieces.is_empty() {
                        return None;
                    }
                    let block = st.take_block();
                    return Some((Ok(block), st));
                }
            }
        }
    })
    .boxed()
}

/// Decodes one block into batches, with the lines skipped under `--on-error skip`. Line
/// numbers (in errors and skips) are the block's, from 1.
pub(super) fn decode_block(
    output: SchemaRef,
    full: &Schema,
    file: &str,
    decode: DecodeOptions,
    block: Block,
) -> ckpt_core::Result<DecodedBlock> {
    let mut decoder = JsonlDecoder::new(output, full, file, decode);
    if !block.file_start {
        decoder.starts_mid_file();
    }
    let mut batches = Vec::new();
    let mut line = 0;
    for body in &block.pieces {
        // Lines found with memchr (SIMD), not a byte-by-byte split: this loop sees every byte.
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', body).chain(
            // A last line without a newline.
            (body.last().is_some_and(|b| *b != b'\n')).then_some(body.len()),
        );
        for end in ends {
            line += 1;
            decoder.decode_line(&body[start..end], line)?;
            start = end + 1;
            if decoder.is_full() {
                batches.extend(decoder.flush()?);
            }
        }
    }
    batches.extend(decoder.flush()?);
    Ok(DecodedBlock {
        batches,
        skipped: decoder.take_skipped(),
        lines: line,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::tests::RUNTIME;
    use super::*;

    proptest! {
        // The seed is printed: a failure replays with PROPTEST_RNG_SEED=N.
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(ckpt_core::properties::replay_seed()), failure_persistence: None, ..ProptestConfig::with_cases(48) })]

        /// Blocks hold whole lines, in order, every byte once, and stay within the block
        /// size (a longer line alone), whatever the size of the chunks they are cut from.
        #[test]
        fn blocks_are_whole_lines_within_the_block_size(
            lines in prop::collection::vec(prop::collection::vec(b'a'..=b'z', 0..40), 0..40),
            last_newline in any::<bool>(),
            chunk_sizes in prop::collection::vec(1usize..200, 1..20),
            block_bytes in 1usize..120,
        ) {
            let mut text: Vec<u8> = Vec::new();
            for l in &lines {
                text.extend_from_slice(l);
                text.push(b'\n');
            }
            if !last_newline && !text.is_empty() {
                text.pop();
            }
            let mut chunks = Vec::new();
            let mut at = 0;
            for size in chunk_sizes.iter().cycle() {
                if at >= text.len() {
                    break;
                }
                let end = (at + size).min(text.len());
                chunks.push(Ok(Bytes::copy_from_slice(&text[at..end])));
                at = end;
            }
            let got: Vec<Block> = RUNTIME.block_on(
                blocks(futures::stream::iter(chunks).boxed(), true, block_bytes)
                    .map(|b| b.unwrap())
                    .collect(),
            );
            let mut joined = Vec::new();
            for (i, b) in got.iter().enumerate() {
                let body: Vec<u8> = b.pieces.iter().flat_map(|p| p.iter().copied()).collect();
                prop_assert_eq!(body.len(), b.bytes);
                prop_assert!(!body.is_empty());
                prop_assert_eq!(b.file_start, i == 0);
                let last_block = i + 1 == got.len();
                prop_assert!(body.ends_with(b"\n") || last_block, "block {} cut mid-line", i);
                let one_line = body[..body.len() - 1].iter().all(|c| *c != b'\n');
                prop_assert!(body.len() <= block_bytes || one_line, "block {} of {} bytes", i, body.len());
                joined.extend_from_slice(&body);
            }
            prop_assert_eq!(joined, text);
        }
    }
}

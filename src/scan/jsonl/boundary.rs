//! Byte ranges of a file cut at line boundaries, read from the version of the file that
//! was listed: [`LineSpan`] (which lines a range holds) and [`PinnedFile`] (requests
//! pinned by ETag, the look-ahead windows that find the newline ending a range's last
//! line, and the count of lines before a range for messages).
//!
//! Ranges follow the convention of DataFusion's line-based sources (a range holds the
//! lines that start in it), so the ranges DataFusion cuts read every line once. The reads
//! are ours: every request is pinned to one version and counted in the scan's metrics,
//! and the store's chunks are sliced to the span, not copied.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::physical_plan::metrics::Count;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};

use super::settings::MAX_WINDOW;
use crate::{Error, Result};

/// The lines a read covers, in the convention DataFusion uses for line-based formats: a
/// range `[start, end)` holds the lines whose first byte lies in it. Its first line follows
/// the first newline at or after `start - 1` (or is the file's first line when `start` is
/// 0), its last one ends with the first newline at or after `end - 1` (or at the end of
/// the file). Ranges that tile a file thus read each line exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LineSpan {
    start: u64,
    /// None: to the end of the file (the whole file, or its last range).
    end: Option<u64>,
}

impl LineSpan {
    /// The span of a file to read; None when its range holds no byte of the file.
    pub(super) fn of(file: &PartitionedFile) -> Result<Option<LineSpan>> {
        let size = file.object_meta.size;
        let Some(range) = &file.range else {
            return Ok(Some(LineSpan {
                start: 0,
                end: None,
            }));
        };
        let (Ok(start), Ok(end)) = (u64::try_from(range.start), u64::try_from(range.end)) else {
            return Err(Error::internal(format!(
                "byte range {}..{} of {} is negative",
                range.start, range.end, file.object_meta.location
            )));
        };
        if start >= end || start >= size {
            return Ok(None);
        }
        Ok(Some(LineSpan {
            start,
            end: (end < size).then_some(end),
        }))
    }

    /// The span starts with the file: lines are numbered from 1 there, and a BOM is allowed.
    pub(super) fn at_file_start(&self) -> bool {
        self.start == 0
    }

    /// Where its reads begin: the byte before `start`, which tells whether a line starts
    /// at `start`.
    fn fetch_start(&self) -> u64 {
        self.start.saturating_sub(1)
    }
}

/// One file as listed when the scan was planned. Every request is conditional on that
/// version (its ETag; not its version id, whose reads need a permission of their own on
/// S3, `s3:GetObjectVersion`, that a reader may lack): the partitions reading a
/// file that a concurrent save replaces never mix the two versions, they stop with
/// "changed while it was being read", and a manager's load reads again.
#[derive(Debug, Clone)]
pub(super) struct PinnedFile {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) meta: ObjectMeta,
    /// The name in messages: `summaries.jsonl`.
    pub(super) display: Arc<str>,
    pub(super) bytes_scanned: Count,
}

impl PinnedFile {
    async fn get(&self, range: Option<GetRange>) -> Result<BoxStream<'static, Result<Bytes>>> {
        let options = GetOptions {
            // A request for the whole file is one version by itself, whichever is there
            // now: only ranges, which other requests (other partitions) complete, are pinned.
            // A weak ETag (`W/"..."`) never matches If-Match (a strong comparison): such a
            // file cannot be pinned by it.
            if_match: range
                .as_ref()
                .and(self.meta.e_tag.clone())
                .filter(|t| !t.starts_with("W/")),
            range,
            ..Default::default()
        };
        let response = self
            .store
            .get_opts(&self.meta.location, options)
            .await
            .map_err(|e| self.error(e))?;
        let file = self.clone();
        Ok(response
            .into_stream()
            .map(move |chunk| {
                let chunk = chunk.map_err(|e| file.error(e))?;
                file.bytes_scanned.add(chunk.len());
                Ok(chunk)
            })
            .boxed())
    }

    fn error(&self, e: object_store::Error) -> Error {
        match e {
            object_store::Error::Precondition { .. } => {
                Error::changed_while_read(self.display.to_string())
            }
            e => Error::storage(format!("cannot read {}", self.display), e),
        }
    }

    /// The bytes of the span's lines, as slices of the store's chunks. The first request
    /// is made before this returns; when the span ends before the file does, it covers
    /// the span and `lookahead` bytes more, and further windows are requested only while
    /// the newline ending the span's last line is not found.
    pub(super) async fn span_bytes(
        self,
        span: LineSpan,
        lookahead: u64,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let from = span.fetch_start();
        let first_end = span
            .end
            .map(|end| end.saturating_add(lookahead).min(self.meta.size));
        let range = match first_end {
            Some(end) => Some(GetRange::Bounded(from..end)),
            None if from > 0 => Some(GetRange::Offset(from)),
            None => None,
        };
        let first = self.get(range).await?;
        let chunks = windows(self, first, first_end, lookahead);
        Ok(span_lines(chunks, span).boxed())
    }

    /// Lines of the file before the span's first line. A span starting mid-file does not
    /// know them; they are counted, once, the first time a message needs a line number:
    /// the newlines before `start - 1` (one request for those bytes, of the same version),
    /// and the newline the span's first line follows.
    pub(super) async fn lines_before(
        &self,
        span: LineSpan,
        known: &mut Option<u64>,
    ) -> Result<u64> {
        if let Some(n) = *known {
            return Ok(n);
        }
        let end = span.fetch_start();
        let mut newlines = 0u64;
        if end > 0 {
            let mut chunks = self.get(Some(GetRange::Bounded(0..end))).await?;
            while let Some(chunk) = chunks.next().await {
                newlines += memchr::memchr_iter(b'\n', &chunk?).count() as u64;
            }
        }
        let n = newlines + 1;
        *known = Some(n);
        Ok(n)
    }
}

/// The chunks of `first`, then, while the consumer polls for more and the listed size is
/// not reached, of windows requested after `first_end`, each twice the last (up to
/// [`MAX_WINDOW`]). `first_end` None: `first` goes to the end of the file.
fn windows(
    file: PinnedFile,
    first: BoxStream<'static, Result<Bytes>>,
    first_end: Option<u64>,
    lookahead: u64,
) -> BoxStream<'static, Result<Bytes>> {
    struct State {
        file: PinnedFile,
        current: BoxStream<'static, Result<Bytes>>,
        /// Where the current request ends, when it is a window.
        current_end: Option<u64>,
        window: u64,
    }
    let state = State {
        file,
        current: first,
        current_end: first_end,
        window: lookahead.max(1),
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(chunk) = st.current.next().await {
                return Some((chunk, st));
            }
            let start = st.current_end.filter(|end| *end < st.file.meta.size)?;
            st.window = (st.window * 2).min(MAX_WINDOW);
            let end = (start + st.window).min(st.file.meta.size);
            match st.file.get(Some(GetRange::Bounded(start..end))).await {
                Ok(next) => {
                    st.current = next;
                    st.current_end = Some(end);
                }
                Err(e) => {
                    st.current = futures::stream::empty().boxed();
                    st.current_end = None;
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}

/// Cuts the chunks of reads starting at `span.fetch_start()` down to the span's lines:
/// drops what precedes its first line, and ends with the newline ending its last line
/// (after which it stops polling, so no further window is requested).
fn span_lines(
    chunks: BoxStream<'static, Result<Bytes>>,
    span: LineSpan,
) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
    struct State {
        chunks: BoxStream<'static, Result<Bytes>>,
        /// Offset in the file of the next chunk's first byte.
        pos: u64,
        /// Still looking for the newline the span's first line follows.
        aligning: bool,
        /// The first newline at or after this offset ends the span.
        last_newline_from: Option<u64>,
        done: bool,
    }
    let state = State {
        chunks,
        pos: span.fetch_start(),
        aligning: !span.at_file_start(),
        last_newline_from: span.end.map(|end| end - 1),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        while !st.done {
            let mut chunk = match st.chunks.next().await? {
                Ok(chunk) => chunk,
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            let mut at = st.pos; // the offset of chunk[0]
            st.pos += chunk.len() as u64;
            if st.aligning {
                let Some(i) = memchr::memchr(b'\n', &chunk) else {
                    continue;
                };
                st.aligning = false;
                let newline = at + i as u64;
                // The first line would start at or after `end`: the span holds none.
                if st.last_newline_from.is_some_and(|from| newline >= from) {
                    return None;
                }
                chunk = chunk.slice(i + 1..);
                at = newline + 1;
            }
            if let Some(from) = st.last_newline_from {
                let skip = usize::try_from(from.saturating_sub(at)).unwrap_or(usize::MAX);
                if let Some(j) = chunk
                    .get(skip..)
                    .and_then(|rest| memchr::memchr(b'\n', rest))
                {
                    st.done = true;
                    return Some((Ok(chunk.slice(..=skip + j)), st));
                }
            }
            if !chunk.is_empty() {
                return Some((Ok(chunk), st));
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::super::blocks::{Block, blocks};
    use super::super::tests::{Fixture, newlines, sample_file};
    use super::*;

    #[tokio::test]
    async fn a_file_replaced_during_a_read_stops_it() {
        let fx = Fixture::new();
        let bytes = sample_file();
        let meta = fx.put("summaries.jsonl", &bytes).await;
        let file = PinnedFile {
            store: fx.store.clone(),
            meta,
            display: "summaries.jsonl".into(),
            bytes_scanned: Count::new(),
        };
        // A range ending inside the first line: the newline ending it is looked for in
        // later windows, requested after the save below.
        let span = LineSpan {
            start: 0,
            end: Some(10),
        };
        let lines = file.span_bytes(span, 4).await.unwrap();
        fx.put("summaries.jsonl", &bytes).await;
        let err = lines.try_collect::<Vec<_>>().await.unwrap_err();
        assert!(err.is_changed_while_read(), "{err}");
    }

    /// The lines a span holds, by definition: those whose first byte is in the range.
    fn expected_span(text: &[u8], start: u64, end: u64) -> Vec<u8> {
        let mut line_starts = vec![0u64];
        line_starts.extend(
            newlines(text)
                .iter()
                .map(|p| p + 1)
                .filter(|s| *s < text.len() as u64),
        );
        let mut out = Vec::new();
        for (i, s) in line_starts.iter().enumerate() {
            if (start..end).contains(s) {
                let e = line_starts.get(i + 1).copied().unwrap_or(text.len() as u64);
                out.extend_from_slice(&text[*s as usize..e as usize]);
            }
        }
        out
    }

    fn chunked(bytes: &[u8], size: usize) -> BoxStream<'static, Result<Bytes>> {
        let chunks: Vec<Result<Bytes>> = bytes
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(chunks).boxed()
    }

    #[tokio::test]
    async fn span_lines_and_blocks_over_every_chunking() {
        let text = b"\xef\xbb\xbfab\n\ncd\r\nefg\n\nh\nij".to_vec();
        let size = text.len() as u64;
        for start in 0..size {
            for end in start + 1..=size {
                let span = LineSpan {
                    start,
                    end: (end < size).then_some(end),
                };
                let expected = expected_span(&text, start, end);
                for chunk in 1..=5 {
                    let input = chunked(&text[span.fetch_start() as usize..], chunk);
                    let got: Vec<Bytes> = span_lines(input, span).try_collect().await.unwrap();
                    assert_eq!(got.concat(), expected, "{start}..{end} by {chunk}");
                    for block_bytes in [1, 3, 64] {
                        let input = chunked(&expected, chunk);
                        let blocks: Vec<Block> = blocks(input, start == 0, block_bytes)
                            .try_collect()
                            .await
                            .unwrap();
                        let pieces: Vec<u8> =
                            blocks.iter().flat_map(|b| b.pieces.concat()).collect();
                        assert_eq!(pieces, expected);
                        for (i, b) in blocks.iter().enumerate() {
                            assert_eq!(b.file_start, i == 0 && start == 0);
                            assert_eq!(b.bytes, b.pieces.iter().map(Bytes::len).sum::<usize>());
                            let last = b.pieces.last().and_then(|p| p.last());
                            assert!(i + 1 == blocks.len() || last == Some(&b'\n'));
                        }
                    }
                }
            }
        }
    }
}

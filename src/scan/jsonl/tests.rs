//! Scans of JSONL checkpoints end to end: plans made by [`JsonlFormat`] over an in-memory
//! store, read whole and in every split into byte ranges, with bad lines, replaced files,
//! memory accounting, `EXPLAIN`, and a property over generated files. The fixtures here
//! are shared with the tests of the byte stages beside their code.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use ckpt_core::jsonl::{DecodeOptions, OnError};
use ckpt_core::kind::CheckpointKind;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::memory_pool::{MemoryPool, MemoryReservation};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use proptest::prelude::*;

use super::settings::ReadTuning;
use super::{FileNames, JsonlFormat, SkipLog};
use crate::Result;

const STORE: &str = "memory://jsonl-scan";

/// A session over an in-memory store holding checkpoints under `run/`.
pub(super) struct Fixture {
    ctx: SessionContext,
    pub(super) store: Arc<InMemory>,
}

impl Fixture {
    pub(super) fn new() -> Self {
        Self::with_config(SessionConfig::new())
    }

    fn with_config(mut config: SessionConfig) -> Self {
        // Partitions are executed one after the other below and concatenated: each
        // must read its own group, not take its siblings' files.
        config
            .options_mut()
            .execution
            .enable_file_stream_work_stealing = false;
        let ctx = SessionContext::new_with_config(config);
        let store = Arc::new(InMemory::new());
        ctx.register_object_store(&url::Url::parse(STORE).unwrap(), store.clone());
        Fixture { ctx, store }
    }

    pub(super) async fn put(&self, name: &str, bytes: &[u8]) -> ObjectMeta {
        let path = Path::from(format!("run/{name}"));
        self.store
            .put(&path, PutPayload::from(bytes.to_vec()))
            .await
            .unwrap();
        self.store.head(&path).await.unwrap()
    }

    /// A scan of `meta` with one partition per range (None: the whole file).
    async fn plan(
        &self,
        format: &JsonlFormat,
        meta: &ObjectMeta,
        ranges: &[Option<Range<u64>>],
        projection: Option<Vec<usize>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let groups = ranges
            .iter()
            .map(|range| {
                let mut file = PartitionedFile::new_from_meta(meta.clone());
                if let Some(r) = range {
                    file = file.with_range(r.start as i64, r.end as i64);
                }
                FileGroup::new(vec![file])
            })
            .collect();
        let source = format.file_source(TableSchema::from(format.kind.schema()));
        let conf = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE)?, source)
            .with_file_groups(groups)
            .with_projection_indices(projection)?
            .build();
        format.create_physical_plan(&self.ctx.state(), conf).await
    }

    /// Executes the partitions one after the other, batches in partition order.
    async fn run(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<RecordBatch> {
        let mut batches = Vec::new();
        for p in 0..plan.output_partitioning().partition_count() {
            let stream = plan.execute(p, self.ctx.task_ctx())?;
            batches.extend(stream.try_collect::<Vec<_>>().await?);
        }
        Ok(concat_batches(&plan.schema(), &batches)?)
    }

    async fn read(
        &self,
        format: &JsonlFormat,
        meta: &ObjectMeta,
        ranges: &[Option<Range<u64>>],
        projection: Option<Vec<usize>>,
    ) -> Result<RecordBatch> {
        let plan = self.plan(format, meta, ranges, projection).await?;
        self.run(&plan).await
    }
}

/// Blocks of a few lines and one-line windows past a range's end: a small file
/// crosses every boundary.
const TINY: ReadTuning = ReadTuning {
    block_bytes: 200,
    end_lookahead: 16,
};

fn format(on_error: OnError, tuning: ReadTuning) -> JsonlFormat {
    JsonlFormat::new(
        CheckpointKind::Summaries,
        DecodeOptions {
            on_error,
            batch_rows: 3,
        },
        SkipLog::default(),
    )
    .with_file_names(FileNames::relative_to(Path::from("run")))
    .with_tuning(tuning)
}

/// Ranges tiling `0..size`, cut at `cuts`.
fn tiles(size: u64, cuts: &[u64]) -> Vec<Option<Range<u64>>> {
    let mut bounds: Vec<u64> = cuts
        .iter()
        .copied()
        .filter(|c| *c > 0 && *c < size)
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds.insert(0, 0);
    bounds.push(size);
    bounds.windows(2).map(|w| Some(w[0]..w[1])).collect()
}

fn summary(i: usize) -> String {
    format!(
        r#"{{"summary":"s{i} says \"hi\"\n","request":null,"topic":"t{}","languages":["en"],"task":null,"concerning_score":{},"user_frustration":null,"assistant_errors":[],"chat_id":"c{i}","metadata":{{"turns":{i},"nested":{{"embedding":[1,2],"chat_id":"x"}}}},"embedding":[0.{i},-1.5e-3,{i}]}}"#,
        i % 3,
        1 + i % 5
    )
}

/// A BOM, CRLF and LF endings, blank lines, and a last line without a newline.
pub(super) fn sample_file() -> Vec<u8> {
    let mut text = String::from("\u{feff}");
    for i in 0..12 {
        text.push_str(&summary(i));
        text.push_str(match i % 4 {
            0 => "\r\n",
            1 => "\n\n",
            2 => "\n  \t\n",
            _ => "\n",
        });
    }
    text.push_str(&summary(12));
    text.into_bytes()
}

pub(super) fn newlines(bytes: &[u8]) -> Vec<u64> {
    memchr::memchr_iter(b'\n', bytes)
        .map(|p| p as u64)
        .collect()
}

#[tokio::test]
async fn byte_ranges_read_the_rows_of_the_whole_file() {
    let fx = Fixture::new();
    let bytes = sample_file();
    let size = bytes.len() as u64;
    let meta = fx.put("summaries.jsonl", &bytes).await;
    for tuning in [TINY, ReadTuning::default()] {
        let format = format(OnError::Fail, tuning);
        for projection in [None, Some(vec![8, 2, 10]), Some(vec![])] {
            let whole = fx
                .read(&format, &meta, &[None], projection.clone())
                .await
                .unwrap();
            assert_eq!(whole.num_rows(), 13);
            let mut splits: Vec<Vec<u64>> = Vec::new();
            // N equal ranges, N = 1..7.
            for n in 1..=7u64 {
                splits.push((1..n).map(|k| k * size / n).collect());
            }
            // In the BOM, at byte 1, at a newline, just after one, inside a line.
            splits.extend([vec![1], vec![2], vec![3], vec![1, 2, 3, 4]]);
            for p in newlines(&bytes) {
                splits.push(vec![p]);
                splits.push(vec![p + 1]);
                splits.push(vec![p, p + 1]);
                splits.push(vec![p + 5]);
            }
            for cuts in splits {
                let ranges = tiles(size, &cuts);
                let read = fx
                    .read(&format, &meta, &ranges, projection.clone())
                    .await
                    .unwrap();
                assert_eq!(read, whole, "cuts {cuts:?}, projection {projection:?}");
            }
        }
    }
}

#[tokio::test]
async fn every_single_cut_reads_the_rows_of_the_whole_file() {
    let fx = Fixture::new();
    let bytes = sample_file();
    let size = bytes.len() as u64;
    let meta = fx.put("summaries.jsonl", &bytes).await;
    let format = format(OnError::Fail, TINY);
    let whole = fx.read(&format, &meta, &[None], None).await.unwrap();
    for cut in 1..size {
        let read = fx
            .read(&format, &meta, &tiles(size, &[cut]), None)
            .await
            .unwrap();
        assert_eq!(read, whole, "cut at {cut}");
    }
}

/// A file whose line 9 (of 14) is bad: a string where a number goes.
fn file_with_bad_line() -> Vec<u8> {
    let mut text = String::from("\u{feff}");
    for i in 0..14 {
        if i == 8 {
            text.push_str(r#"{"summary":"x","chat_id":"c","concerning_score":"high"}"#);
        } else if i == 11 {
            text.push_str("   ");
        } else {
            text.push_str(&summary(i));
        }
        text.push_str(if i % 2 == 0 { "\r\n" } else { "\n" });
    }
    text.into_bytes()
}

#[tokio::test]
async fn a_bad_line_in_a_later_range_is_reported_at_its_line_of_the_file() {
    let fx = Fixture::new();
    let bytes = file_with_bad_line();
    let size = bytes.len() as u64;
    let meta = fx.put("summaries.jsonl", &bytes).await;
    let bad_line_start = newlines(&bytes)[7] + 1;

    let fail = format(OnError::Fail, TINY);
    let whole = fx.read(&fail, &meta, &[None], None).await.unwrap_err();
    assert!(
        whole
            .to_string()
            .starts_with("summaries.jsonl:9: concerning_score: "),
        "{whole}"
    );
    let mut splits = vec![
        vec![bad_line_start],
        vec![bad_line_start - 1],
        vec![size / 2],
    ];
    splits.extend((2..=7u64).map(|n| (1..n).map(|k| k * size / n).collect()));
    for cuts in &splits {
        let ranges = tiles(size, cuts);
        let err = fx.read(&fail, &meta, &ranges, None).await.unwrap_err();
        assert_eq!(err.to_string(), whole.to_string(), "cuts {cuts:?}");
        // A projection that leaves out the bad field fails all the same.
        let err = fx
            .read(&fail, &meta, &ranges, Some(vec![8]))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), whole.to_string(), "cuts {cuts:?}");
    }

    let skip = format(OnError::Skip, TINY);
    let rows = fx.read(&skip, &meta, &[None], None).await.unwrap();
    assert_eq!(rows.num_rows(), 12);
    let skipped = skip.skips.take();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].0.as_str(), skipped[0].1.line),
        ("summaries.jsonl", 9)
    );
    for cuts in &splits {
        let read = fx
            .read(&skip, &meta, &tiles(size, cuts), None)
            .await
            .unwrap();
        assert_eq!(read, rows, "cuts {cuts:?}");
        assert_eq!(skip.skips.take(), skipped, "cuts {cuts:?}");
    }
}

#[tokio::test]
async fn a_file_replaced_since_the_listing_is_read_whole_or_not_at_all() {
    let fx = Fixture::new();
    let bytes = sample_file();
    let listed = fx.put("summaries.jsonl", &bytes).await;
    let whole = fx
        .read(&format(OnError::Fail, TINY), &listed, &[None], None)
        .await
        .unwrap();
    fx.put("summaries.jsonl", &bytes).await; // a save of the same content: a new version
    let format = format(OnError::Fail, TINY);
    // One request for the whole file reads the version there now, all of it.
    let again = fx.read(&format, &listed, &[None], None).await.unwrap();
    assert_eq!(again, whole);
    // Ranges, read by requests of their own, are pinned to the listed version.
    let size = bytes.len() as u64;
    let ranges = tiles(size, &[size / 3, 2 * size / 3]);
    let err = fx.read(&format, &listed, &ranges, None).await.unwrap_err();
    assert!(err.is_changed_while_read(), "{err}");
}

#[tokio::test]
async fn datafusion_splits_a_file_into_byte_ranges() {
    let fx = Fixture::new();
    let meta = fx.put("summaries.jsonl", &sample_file()).await;
    let plan = fx
        .plan(&format(OnError::Fail, TINY), &meta, &[None], None)
        .await
        .unwrap();
    let mut config = datafusion::config::ConfigOptions::new();
    config.optimizer.repartition_file_min_size = 0;
    let split = plan
        .repartitioned(4, &config)
        .unwrap()
        .expect("byte ranges");
    assert_eq!(split.output_partitioning().partition_count(), 4);
    assert_eq!(fx.run(&split).await.unwrap(), fx.run(&plan).await.unwrap());
}

#[tokio::test]
async fn a_listing_table_of_the_format_answers_sql_over_byte_ranges() {
    use datafusion::datasource::listing::{
        ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
    };
    let mut config = SessionConfig::new().with_target_partitions(4);
    config.options_mut().optimizer.repartition_file_min_size = 0;
    let fx = Fixture::with_config(config);
    fx.put("summaries.jsonl", &file_with_bad_line()).await;
    let format = format(OnError::Skip, TINY);
    let url = ListingTableUrl::parse(format!("{STORE}/run/summaries.jsonl")).unwrap();
    let options = ListingOptions::new(Arc::new(format.clone())).with_file_extension(".jsonl");
    let schema = options.infer_schema(&fx.ctx.state(), &url).await.unwrap();
    assert_eq!(schema, CheckpointKind::Summaries.schema());
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    let table = ListingTable::try_new(config).unwrap();
    fx.ctx.register_table("summaries", Arc::new(table)).unwrap();

    let query = "SELECT topic, count(*) AS n FROM summaries GROUP BY topic ORDER BY topic";
    let explain = fx.ctx.sql(&format!("EXPLAIN {query}")).await.unwrap();
    let explain =
        datafusion::arrow::util::pretty::pretty_format_batches(&explain.collect().await.unwrap())
            .unwrap()
            .to_string();
    assert!(explain.contains("file_groups={4 groups:"), "{explain}");
    assert!(explain.contains("file_type=jsonl, kind=summaries, on_error=skip"));
    let rows = fx.ctx.sql(query).await.unwrap().collect().await.unwrap();
    datafusion::assert_batches_eq!(
        [
            "+-------+---+",
            "| topic | n |",
            "+-------+---+",
            "| t0    | 5 |",
            "| t1    | 5 |",
            "| t2    | 2 |",
            "+-------+---+",
        ],
        &rows
    );
    let skipped = format.skips.take();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (skipped[0].0.as_str(), skipped[0].1.line),
        ("summaries.jsonl", 9)
    );
}

/// A pool that remembers the most it ever held.
#[derive(Debug, Default)]
struct PeakPool {
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl fmt::Display for PeakPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeakPool")
    }
}

impl MemoryPool for PeakPool {
    fn name(&self) -> &str {
        "peak"
    }
    fn grow(&self, _: &MemoryReservation, additional: usize) {
        let now = self.used.fetch_add(additional, Ordering::SeqCst) + additional;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
    fn shrink(&self, _: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::SeqCst);
    }
    fn try_grow(&self, r: &MemoryReservation, additional: usize) -> DfResult<()> {
        self.grow(r, additional);
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn blocks_in_flight_are_accounted_in_the_session_pool() {
    let pool = Arc::new(PeakPool::default());
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_pool(pool.clone())
        .build_arc()
        .unwrap();
    let mut config = SessionConfig::new();
    config
        .options_mut()
        .execution
        .enable_file_stream_work_stealing = false;
    let fx = Fixture {
        ctx: SessionContext::new_with_config_rt(config, runtime),
        store: Arc::new(InMemory::new()),
    };
    fx.ctx
        .register_object_store(&url::Url::parse(STORE).unwrap(), fx.store.clone());
    let bytes = sample_file();
    let meta = fx.put("summaries.jsonl", &bytes).await;
    let read = fx
        .read(&format(OnError::Fail, TINY), &meta, &[None], None)
        .await
        .unwrap();
    assert_eq!(read.num_rows(), 13);
    let peak = pool.peak.load(Ordering::SeqCst);
    assert!(
        peak >= TINY.block_bytes && peak <= bytes.len(),
        "peak {peak}"
    );
    assert_eq!(pool.reserved(), 0);
}

#[tokio::test]
async fn explain_shows_the_kind_and_the_metrics() {
    let fx = Fixture::new();
    let bytes = file_with_bad_line();
    let meta = fx.put("summaries.jsonl", &bytes).await;
    let format = format(OnError::Skip, TINY);
    let size = bytes.len() as u64;
    let plan = fx
        .plan(&format, &meta, &tiles(size, &[size / 2]), Some(vec![8]))
        .await
        .unwrap();
    let shown = displayable(plan.as_ref()).indent(false).to_string();
    assert!(
        shown.contains("projection=[chat_id], file_type=jsonl, kind=summaries, on_error=skip"),
        "{shown}"
    );
    assert_eq!(fx.run(&plan).await.unwrap().num_rows(), 12);
    let metrics = plan.metrics().unwrap().aggregate_by_name();
    let value = |name: &str| metrics.sum_by_name(name).map(|v| v.as_usize());
    assert_eq!(value("lines"), Some(14));
    assert_eq!(value("lines_skipped"), Some(1));
    assert_eq!(metrics.output_rows(), Some(12));
    // The look-ahead past the first range's end, and the prefix counted to number the
    // skipped line of the second range, come on top of the file's bytes.
    assert!(value("bytes_scanned").unwrap() >= bytes.len());
    assert!(metrics.sum_by_name("decode_time").is_some());
}

// ---- property: any split of any file reads as the whole file does ----

pub(super) static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

/// Spaces and tabs, where JSON allows them.
fn ws() -> impl Strategy<Value = String> {
    "[ \t]{0,2}"
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just(r#""say \"embedding\": [1]\n""#.to_owned()),
        Just(r#""é \u00e9 {\"chat_id\":1}""#.to_owned()),
    ]
}

/// A JSON object of `values`, keys drawn from the line's own field names: the same
/// names at other depths must not be taken for the line's fields.
fn object_of(values: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop_oneof![
                Just("embedding"),
                Just("chat_id"),
                Just("summary"),
                Just("k")
            ],
            values,
            ws(),
        ),
        0..4,
    )
    .prop_map(|fields| {
        // Keys unique within an object: a duplicate would make the line bad.
        let mut seen = Vec::new();
        let body: Vec<String> = fields
            .into_iter()
            .filter(|(k, _, _)| {
                let fresh = !seen.contains(k);
                seen.push(*k);
                fresh
            })
            .map(|(k, v, w)| format!("{w}\"{k}\"{w}:{w}{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

/// Metadata: objects nested up to three deep, with lists and scalars.
fn metadata() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        text(),
        any::<i32>().prop_map(|n| n.to_string()),
        Just("null".to_owned()),
        Just("[0.5, -1e-3, 7]".to_owned()),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            object_of(inner.clone()),
            prop::collection::vec(inner, 0..3).prop_map(|items| format!("[{}]", items.join(","))),
        ]
        .boxed()
    });
    object_of(value)
}

fn valid_line() -> impl Strategy<Value = String> {
    (
        text(),
        prop::option::of(text()),
        prop::option::of(1i32..=5),
        "[a-z0-9]{1,6}",
        metadata(),
        prop::option::of(prop::collection::vec(-1000i32..1000, 0..4)),
        ws(),
    )
        .prop_map(|(summary, topic, score, chat_id, metadata, embedding, w)| {
            let topic = topic.unwrap_or_else(|| "null".into());
            let score = score.map_or("null".into(), |s| s.to_string());
            let embedding = embedding.map_or("null".into(), |e| {
                let floats: Vec<String> =
                    e.iter().map(|v| (f64::from(*v) / 7.0).to_string()).collect();
                format!("[{}]", floats.join(&format!(",{w}")))
            });
            format!(
                "{w}{{{w}\"summary\":{w}{summary},\"topic\":{topic},{w}\"concerning_score\":{score},\"chat_id\":\"{chat_id}\",{w}\"metadata\":{metadata},\"embedding\":{w}{embedding}{w}}}{w}"
            )
        })
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => valid_line(),
        1 => "[ \t]{0,3}",
        1 => prop_oneof![
            Just(r#"{"summary":1,"chat_id":"a"}"#.to_owned()),
            Just("not json".to_owned()),
            Just(r#"{"summary":"a","chat_id":"b","concerning_score":NaN}"#.to_owned()),
            Just(r#"{"summary":"a"}"#.to_owned()),
            Just(r#"{"summary":"a","chat_id":"b","chat_id":"c"}"#.to_owned()),
            Just("\u{feff}{\"summary\":\"a\",\"chat_id\":\"b\"}".to_owned()),
        ],
    ]
}

fn file() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        prop::collection::vec((line(), any::<bool>()), 1..24),
        any::<bool>(),
    )
        .prop_map(|(bom, lines, last_newline)| {
            let mut text = String::new();
            if bom {
                text.push('\u{feff}');
            }
            let n = lines.len();
            for (i, (line, crlf)) in lines.into_iter().enumerate() {
                text.push_str(&line);
                if i + 1 < n || last_newline {
                    text.push_str(if crlf { "\r\n" } else { "\n" });
                }
            }
            text.into_bytes()
        })
}

async fn compare_splits(bytes: Vec<u8>, cuts: Vec<u64>, tuning: ReadTuning) {
    let fx = Fixture::new();
    let meta = fx.put("summaries.jsonl", &bytes).await;
    let ranges = tiles(bytes.len() as u64, &cuts);
    for on_error in [OnError::Skip, OnError::Fail] {
        let format = format(on_error, tuning);
        for projection in [None, Some(vec![9, 0])] {
            let whole = fx.read(&format, &meta, &[None], projection.clone()).await;
            let whole_skips = format.skips.take();
            let split = fx.read(&format, &meta, &ranges, projection.clone()).await;
            let split_skips = format.skips.take();
            match (whole, split) {
                (Ok(whole), Ok(split)) => assert_eq!(split, whole, "cuts {cuts:?}"),
                (Err(whole), Err(split)) => {
                    assert_eq!(split.to_string(), whole.to_string(), "cuts {cuts:?}")
                }
                (whole, split) => panic!("cuts {cuts:?}: whole {whole:?}, split {split:?}"),
            }
            assert_eq!(split_skips, whole_skips, "cuts {cuts:?}");
        }
    }
}

proptest! {
    // The seed is printed: a failure replays with PROPTEST_RNG_SEED=N.
    #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(ckpt_core::properties::replay_seed()), failure_persistence: None, ..ProptestConfig::with_cases(48) })]

    #[test]
    fn any_split_reads_as_the_whole_file(
        bytes in file(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..7),
        tiny in any::<bool>(),
    ) {
        let cuts: Vec<u64> = cuts.iter().map(|c| c.index(bytes.len().max(1)) as u64).collect();
        let tuning = if tiny { TINY } else { ReadTuning::default() };
        RUNTIME.block_on(compare_splits(bytes, cuts, tuning));
    }
}

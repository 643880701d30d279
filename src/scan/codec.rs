//! Plans with ckpt's scans, shipped to another process: a [`PhysicalExtensionCodec`] for
//! `DataSourceExec`s whose source is a [`JsonlSource`].
//!
//! DataFusion's protobuf has no message for our source, so `datafusion-proto` hands the
//! whole `DataSourceExec` to this codec. The payload has two parts:
//! - DataFusion's own `FileScanExecConf` for the format-agnostic part of the scan (file
//!   groups with their byte ranges, schema, projection expressions, limit, batch size,
//!   statistics, orderings), serialized by DataFusion's functions so nothing of it is
//!   restated here. It rides in a `JsonScan` plan node, the protobuf message that holds a
//!   file scan configuration, because that is the form `datafusion-proto` encodes.
//! - JSON for what is ours: the kind, the decode options, how files are named in messages,
//!   and each file's ETag and version, which DataFusion's message does not keep and
//!   without which the receiving side could not pin its reads to the version planned.
//!
//! The skip log and the memory pool are the receiving side's: [`CkptCodec::new`] takes the
//! log skipped lines go to, and the pool is the one of the task context decoding the plan.
//!
//! It also carries an appended checkpoint's [`LastWinsExec`] (its scans travel as its
//! inputs; the payload is the kind, the projection, and the versions it listed, which it
//! checks again after reading). Its root is sent as a URL only: the receiving side opens
//! it with its own storage options ([`CkptCodec::with_storage`]), so no credential ever
//! crosses the wire.

use std::sync::Arc;

use bytes::BufMut;
use datafusion::common::{internal_datafusion_err, internal_err, not_impl_err};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::{
    parse_protobuf_file_scan_config, parse_table_schema_from_proto,
};
use datafusion_proto::physical_plan::to_proto::serialize_file_scan_config;
use datafusion_proto::physical_plan::{
    AsExecutionPlan, PhysicalExtensionCodec, PhysicalPlanDecodeContext,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::physical_plan_node::PhysicalPlanType;
use datafusion_proto::protobuf::{JsonScanExecNode, PhysicalPlanNode};
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::jsonl::{FileNames, JsonlSource, SkipLog, on_error_name};
use super::last_wins::{LastWinsExec, Listed};
use crate::storage::{Root, StorageOptions};
use ckpt_core::jsonl::DecodeOptions;
use ckpt_core::kind::CheckpointKind;

/// What a payload starts with: which node it is, and the layout version.
const JSONL_SCAN_TAG: &[u8] = b"ckpt/jsonl-scan/1\n";
const LAST_WINS_TAG: &[u8] = b"ckpt/last-wins/1\n";

/// Encodes and decodes ckpt's scans in physical plans (see the module documentation).
/// Other plans are left to DataFusion; compose it with other codecs with
/// `ComposedPhysicalExtensionCodec` when a plan holds other extension nodes.
#[derive(Debug, Default, Clone)]
pub struct CkptCodec {
    skips: SkipLog,
    storage: StorageOptions,
}

impl CkptCodec {
    /// Decoded scans log the lines they skip (`--on-error skip`) to `skips`.
    pub fn new(skips: SkipLog) -> Self {
        CkptCodec {
            skips,
            storage: StorageOptions::default(),
        }
    }

    /// Roots named in decoded plans are opened with these options (this side's
    /// credentials and endpoint; plans carry URLs only).
    pub fn with_storage(mut self, storage: StorageOptions) -> Self {
        self.storage = storage;
        self
    }
}

/// The part of a JSONL scan DataFusion's message does not hold.
#[derive(Debug, Serialize, Deserialize)]
struct JsonlScanPayload {
    kind: String,
    on_error: String,
    batch_rows: usize,
    /// The prefix file names are made relative to in messages.
    root: Option<String>,
    /// The listed version of every file, group by group, in the order of the file groups.
    versions: Vec<Vec<FileVersion>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileVersion {
    /// The file's path, to check that versions are restored to the files they belong to.
    location: String,
    e_tag: Option<String>,
    version: Option<String>,
}

impl JsonlScanPayload {
    fn of(source: &JsonlSource, conf: &FileScanConfig) -> Self {
        let decode = source.decode_options();
        JsonlScanPayload {
            kind: source.kind().to_string(),
            on_error: on_error_name(decode.on_error).to_owned(),
            batch_rows: decode.batch_rows,
            root: source.file_names().root().map(|p| p.as_ref().to_owned()),
            versions: conf
                .file_groups
                .iter()
                .map(|group| {
                    group
                        .iter()
                        .map(|file| FileVersion {
                            location: file.object_meta.location.as_ref().to_owned(),
                            e_tag: file.object_meta.e_tag.clone(),
                            version: file.object_meta.version.clone(),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn kind(&self) -> DfResult<CheckpointKind> {
        CheckpointKind::from_name(&self.kind)
            .ok_or_else(|| internal_datafusion_err!("unknown checkpoint kind {:?}", self.kind))
    }

    fn decode_options(&self) -> DfResult<DecodeOptions> {
        let on_error = self
            .on_error
            .parse()
            .map_err(|e| internal_datafusion_err!("{e}"))?;
        Ok(DecodeOptions {
            on_error,
            batch_rows: self.batch_rows,
        })
    }

    fn file_names(&self) -> DfResult<FileNames> {
        match &self.root {
            None => Ok(FileNames::default()),
            Some(root) => Path::parse(root)
                .map(FileNames::relative_to)
                .map_err(|e| internal_datafusion_err!("root {root:?}: {e}")),
        }
    }

    /// Puts the listed versions back on the decoded files.
    fn restore_versions(&self, groups: &mut [FileGroup]) -> DfResult<()> {
        if groups.len() != self.versions.len() {
            return internal_err!(
                "{} file groups, versions for {}",
                groups.len(),
                self.versions.len()
            );
        }
        for (group, versions) in groups.iter_mut().zip(&self.versions) {
            if group.len() != versions.len() {
                return internal_err!("{} files, versions for {}", group.len(), versions.len());
            }
            for (i, v) in versions.iter().enumerate() {
                let meta = &mut group[i].object_meta;
                if meta.location.as_ref() != v.location {
                    return internal_err!("version of {} given for {}", v.location, meta.location);
                }
                meta.e_tag = v.e_tag.clone();
                meta.version = v.version.clone();
            }
        }
        Ok(())
    }
}

/// What a [`LastWinsExec`] holds besides its inputs.
#[derive(Debug, Serialize, Deserialize)]
struct LastWinsPayload {
    kind: String,
    /// How many inputs are full scans of the files (the rest scan the parts' ids).
    files: usize,
    first_part: usize,
    projection: Option<Vec<usize>>,
    /// The root's URL (no credentials: see the module documentation).
    root: String,
    file: String,
    format: String,
    base: Option<StoredMeta>,
    parts: Vec<String>,
}

/// An `ObjectMeta`, as listed.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMeta {
    location: String,
    last_modified: chrono::DateTime<chrono::Utc>,
    size: u64,
    e_tag: Option<String>,
    version: Option<String>,
}

impl LastWinsPayload {
    fn of(plan: &LastWinsExec) -> Self {
        let listed = plan.listed();
        LastWinsPayload {
            kind: plan.kind().to_string(),
            files: plan.file_count(),
            first_part: plan.first_part(),
            projection: plan.projection().map(<[usize]>::to_vec),
            root: listed.root.url().to_string(),
            file: listed.file.clone(),
            format: listed.format.to_string(),
            base: listed.base.as_ref().map(|m| StoredMeta {
                location: m.location.to_string(),
                last_modified: m.last_modified,
                size: m.size,
                e_tag: m.e_tag.clone(),
                version: m.version.clone(),
            }),
            parts: listed.parts.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn into_plan(
        self,
        inputs: &[Arc<dyn ExecutionPlan>],
        storage: &StorageOptions,
    ) -> DfResult<LastWinsExec> {
        let kind = CheckpointKind::from_name(&self.kind)
            .ok_or_else(|| internal_datafusion_err!("unknown checkpoint kind {:?}", self.kind))?;
        if self.files > inputs.len() || self.first_part > self.files {
            return internal_err!(
                "a LastWinsExec of {} files (parts from {}) with {} inputs",
                self.files,
                self.first_part,
                inputs.len()
            );
        }
        let path = |p: &str| {
            Path::parse(p).map_err(|e| internal_datafusion_err!("listed path {p:?}: {e}"))
        };
        let listed = Listed {
            root: Root::with_options(&self.root, storage).map_err(crate::Error::from)?,
            file: self.file,
            format: self
                .format
                .parse()
                .map_err(|e| internal_datafusion_err!("{e}"))?,
            base: match self.base {
                None => None,
                Some(m) => Some(object_store::ObjectMeta {
                    location: path(&m.location)?,
                    last_modified: m.last_modified,
                    size: m.size,
                    e_tag: m.e_tag,
                    version: m.version,
                }),
            },
            parts: self
                .parts
                .iter()
                .map(|p| path(p))
                .collect::<DfResult<_>>()?,
        };
        let (files, ids) = inputs.split_at(self.files);
        LastWinsExec::new(
            kind,
            files.to_vec(),
            ids.to_vec(),
            self.first_part,
            self.projection,
            listed,
        )
    }
}

/// Writes a tagged payload: the tag, the JSON's length, the JSON.
fn put_payload(buf: &mut Vec<u8>, tag: &[u8], payload: &impl Serialize) -> DfResult<()> {
    let json = serde_json::to_vec(payload)
        .map_err(|e| internal_datafusion_err!("encoding a plan node: {e}"))?;
    let len = u32::try_from(json.len())
        .map_err(|_| internal_datafusion_err!("a plan node of {} bytes", json.len()))?;
    buf.extend_from_slice(tag);
    buf.put_u32_le(len);
    buf.extend_from_slice(&json);
    Ok(())
}

/// Reads what [`put_payload`] wrote after `tag` (already stripped): the payload and the
/// bytes after it.
fn take_payload<T: serde::de::DeserializeOwned>(rest: &[u8]) -> DfResult<(T, &[u8])> {
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| internal_datafusion_err!("a truncated plan node"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return internal_err!("a truncated plan node");
    }
    let (json, rest) = rest.split_at(len);
    let payload = serde_json::from_slice(json)
        .map_err(|e| internal_datafusion_err!("decoding a plan node: {e}"))?;
    Ok((payload, rest))
}

/// The configuration and source of a JSONL scan, if `plan` is one.
fn jsonl_scan(plan: &dyn ExecutionPlan) -> Option<(&FileScanConfig, &JsonlSource)> {
    let conf = plan
        .downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()?;
    Some((conf, conf.file_source().downcast_ref::<JsonlSource>()?))
}

impl PhysicalExtensionCodec for CkptCodec {
    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        if let Some(plan) = node.downcast_ref::<LastWinsExec>() {
            return put_payload(buf, LAST_WINS_TAG, &LastWinsPayload::of(plan));
        }
        let Some((conf, source)) = jsonl_scan(node.as_ref()) else {
            return not_impl_err!(
                "ckpt's codec encodes its own plan nodes, not {}",
                node.name()
            );
        };
        put_payload(buf, JSONL_SCAN_TAG, &JsonlScanPayload::of(source, conf))?;
        let base_conf = serialize_file_scan_config(conf, self, proto_converter)?;
        let scan = PhysicalPlanNode {
            physical_plan_type: Some(PhysicalPlanType::JsonScan(JsonScanExecNode {
                base_conf: Some(base_conf),
            })),
        };
        scan.try_encode(buf)
    }

    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(rest) = buf.strip_prefix(LAST_WINS_TAG) {
            let (payload, _) = take_payload::<LastWinsPayload>(rest)?;
            return Ok(Arc::new(payload.into_plan(inputs, &self.storage)?));
        }
        let Some(rest) = buf.strip_prefix(JSONL_SCAN_TAG) else {
            return not_impl_err!("not a plan node of ckpt's codec");
        };
        if !inputs.is_empty() {
            return internal_err!("a JSONL scan has no inputs, {} given", inputs.len());
        }
        let (payload, scan) = take_payload::<JsonlScanPayload>(rest)?;
        let scan = PhysicalPlanNode::try_decode(scan)?;
        let Some(PhysicalPlanType::JsonScan(JsonScanExecNode {
            base_conf: Some(base_conf),
        })) = &scan.physical_plan_type
        else {
            return internal_err!("a JSONL scan without its file scan configuration");
        };
        let source = JsonlSource::new(
            payload.kind()?,
            parse_table_schema_from_proto(base_conf)?,
            payload.decode_options()?,
            self.skips.clone(),
        )
        .with_file_names(payload.file_names()?)
        .with_memory_pool(Arc::clone(&ctx.runtime_env().memory_pool));
        let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
        let mut conf = parse_protobuf_file_scan_config(
            base_conf,
            &decode_ctx,
            proto_converter,
            Arc::new(source),
        )?;
        payload.restore_versions(&mut conf.file_groups)?;
        Ok(DataSourceExec::from_data_source(conf))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::compute::concat_batches;
    use datafusion::datasource::file_format::FileFormat;
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::FileScanConfigBuilder;
    use datafusion::datasource::table_schema::TableSchema;
    use datafusion::execution::object_store::ObjectStoreUrl;
    use datafusion::physical_plan::{collect_partitioned, displayable};
    use datafusion::prelude::SessionContext;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::super::jsonl::JsonlFormat;
    use super::*;
    use ckpt_core::jsonl::OnError;

    const STORE: &str = "memory://codec";

    fn line(i: usize) -> String {
        format!(
            r#"{{"summary":"s{i}","topic":"t{}","concerning_score":{},"chat_id":"c{i}","metadata":{{"n":{i}}},"embedding":[0.{i},{i}]}}"#,
            i % 3,
            1 + i % 5
        )
    }

    #[tokio::test]
    async fn a_jsonl_scan_survives_the_trip() {
        let ctx = SessionContext::new();
        let store = Arc::new(InMemory::new());
        ctx.register_object_store(&url::Url::parse(STORE).unwrap(), store.clone());
        let text: String = (0..50).map(|i| line(i) + "\n").collect();
        let path = Path::from("run/summaries.jsonl");
        store
            .put(&path, PutPayload::from(text.into_bytes()))
            .await
            .unwrap();
        let meta = store.head(&path).await.unwrap();
        assert!(meta.e_tag.is_some());

        // Two partitions over byte ranges, a projection that reorders columns, skip mode,
        // a batch size and file names: everything the codec has to carry.
        let skips = SkipLog::default();
        let format = JsonlFormat::new(
            CheckpointKind::Summaries,
            DecodeOptions {
                on_error: OnError::Skip,
                batch_rows: 7,
            },
            skips.clone(),
        )
        .with_file_names(FileNames::relative_to(Path::from("run")));
        let half = meta.size as i64 / 2;
        let groups = vec![
            FileGroup::new(vec![
                PartitionedFile::new_from_meta(meta.clone()).with_range(0, half),
            ]),
            FileGroup::new(vec![
                PartitionedFile::new_from_meta(meta.clone()).with_range(half, meta.size as i64),
            ]),
        ];
        let conf = FileScanConfigBuilder::new(
            ObjectStoreUrl::parse(STORE).unwrap(),
            format.file_source(TableSchema::from(CheckpointKind::Summaries.schema())),
        )
        .with_file_groups(groups)
        .with_projection_indices(Some(vec![8, 2, 10]))
        .unwrap()
        .build();
        let plan = format
            .create_physical_plan(&ctx.state(), conf)
            .await
            .unwrap();

        let codec = CkptCodec::new(skips.clone());
        let mut bytes = Vec::new();
        PhysicalPlanNode::try_from_physical_plan(Arc::clone(&plan), &codec)
            .unwrap()
            .try_encode(&mut bytes)
            .unwrap();
        let decoded = PhysicalPlanNode::try_decode(&bytes)
            .unwrap()
            .try_into_physical_plan(&ctx.task_ctx(), &codec)
            .unwrap();

        let show = |p: &Arc<dyn ExecutionPlan>| displayable(p.as_ref()).indent(true).to_string();
        assert_eq!(show(&decoded), show(&plan));
        let (conf, source) = jsonl_scan(decoded.as_ref()).expect("a JSONL scan");
        assert_eq!(source.kind(), CheckpointKind::Summaries);
        assert_eq!(source.decode_options().on_error, OnError::Skip);
        assert_eq!(
            source.file_names(),
            &FileNames::relative_to(Path::from("run"))
        );
        assert_eq!(conf.batch_size, Some(7));
        for group in &conf.file_groups {
            for file in group.iter() {
                assert_eq!(file.object_meta, meta);
            }
        }

        // Partition by partition, in order: the rows of the file, in its order.
        let schema = decoded.schema();
        let rows = |partitions: Vec<Vec<RecordBatch>>| {
            concat_batches(&schema, &partitions.concat()).unwrap()
        };
        let original = rows(collect_partitioned(plan, ctx.task_ctx()).await.unwrap());
        let roundtrip = rows(
            collect_partitioned(Arc::clone(&decoded), ctx.task_ctx())
                .await
                .unwrap(),
        );
        assert_eq!(original.num_rows(), 50);
        assert_eq!(roundtrip, original);
    }

    #[tokio::test]
    async fn other_plans_are_left_to_datafusion() {
        let codec = CkptCodec::default();
        let plan: Arc<dyn ExecutionPlan> = Arc::new(
            datafusion::physical_plan::empty::EmptyExec::new(CheckpointKind::Clusters.schema()),
        );
        let mut buf = Vec::new();
        let converter = datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {};
        assert!(codec.try_encode(plan, &mut buf, &converter).is_err());
        let ctx = SessionContext::new();
        assert!(
            codec
                .try_decode(b"other", &[], &ctx.task_ctx(), &converter)
                .is_err()
        );
    }
}

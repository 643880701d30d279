//! Downloads of a query's whole result (`POST /api/query?format=csv|json|parquet`),
//! streamed: CSV and JSON lines through arrow's writers, Parquet through parquet's
//! `ArrowWriter`, a batch at a time.

use super::*;

/// The formats of a download.
#[derive(Debug, Clone, Copy)]
pub(super) enum Download {
    Csv,
    Json,
    Parquet,
}

impl Download {
    pub(super) fn parse(s: &str) -> ApiResult<Download> {
        match s {
            "csv" => Ok(Download::Csv),
            "json" => Ok(Download::Json),
            "parquet" => Ok(Download::Parquet),
            other => Err(ApiError::Bad(format!(
                "format {other:?}: choose csv, json or parquet"
            ))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Download::Csv => "text/csv; charset=utf-8",
            Download::Json => "application/x-ndjson",
            Download::Parquet => "application/vnd.apache.parquet",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Download::Csv => "result.csv",
            Download::Json => "result.jsonl",
            Download::Parquet => "result.parquet",
        }
    }
}

/// Writes batches one at a time into bytes to send.
enum Encoder {
    Csv { header: bool },
    Json,
    Parquet(Box<datafusion::parquet::arrow::ArrowWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(format: Download, schema: SchemaRef) -> ApiResult<Encoder> {
        Ok(match format {
            Download::Csv => Encoder::Csv { header: true },
            Download::Json => Encoder::Json,
            Download::Parquet => Encoder::Parquet(Box::new(
                datafusion::parquet::arrow::ArrowWriter::try_new(Vec::new(), schema, None)
                    .map_err(Error::from)?,
            )),
        })
    }

    fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes, Error> {
        match self {
            Encoder::Csv { header } => {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(Vec::new());
                w.write(batch)?;
                *header = false;
                Ok(Bytes::from(w.into_inner()))
            }
            Encoder::Json => {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
                w.write(batch)?;
                w.finish()?;
                Ok(Bytes::from(w.into_inner()))
            }
            // The writer keeps a row group until it is full; what it has written (row
            // groups done) is sent as it comes.
            Encoder::Parquet(w) => {
                w.write(batch)?;
                Ok(Bytes::from(std::mem::take(w.inner_mut())))
            }
        }
    }

    fn finish(self) -> Result<Bytes, Error> {
        match self {
            Encoder::Csv { .. } | Encoder::Json => Ok(Bytes::new()),
            Encoder::Parquet(w) => Ok(Bytes::from(w.into_inner()?)),
        }
    }
}

/// The whole result, streamed in the format asked for. The first batch is awaited before
/// answering, so that an error of the plan's start is a JSON answer, not a cut download;
/// the time limit holds for the whole download.
pub(super) async fn download(
    state: &Shared,
    df: DataFrame,
    format: Download,
) -> ApiResult<Response> {
    let deadline = tokio::time::Instant::now() + state.query_timeout;
    let limit = state.query_timeout;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream: SendableRecordBatchStream =
        match tokio::time::timeout_at(deadline, df.execute_stream()).await {
            Ok(s) => s?,
            Err(_) => return Err(ApiError::Timeout(limit)),
        };
    let first = match tokio::time::timeout_at(deadline, stream.next()).await {
        Ok(b) => b.transpose()?,
        Err(_) => return Err(ApiError::Timeout(limit)),
    };
    let mut encoder = Encoder::new(format, schema.clone())?;
    let mut head = Vec::new();
    if let Some(b) = &first {
        head.push(encoder.batch(b).map_err(ApiError::from)?);
    } else if let Encoder::Csv { .. } = encoder {
        head.push(encoder.batch(&RecordBatch::new_empty(schema))?);
    }
    struct Rest {
        stream: Option<SendableRecordBatchStream>,
        encoder: Option<Encoder>,
    }
    let rest = Rest {
        stream: first.is_some().then_some(stream),
        encoder: Some(encoder),
    };
    let tail = futures::stream::try_unfold(rest, move |mut rest| async move {
        loop {
            let Some(stream) = rest.stream.as_mut() else {
                return match rest.encoder.take() {
                    Some(e) => Ok(Some((e.finish()?, rest))),
                    None => Ok(None),
                };
            };
            let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(n) => n,
                Err(_) => {
                    return Err(Error::config(format!(
                        "the download ran longer than the limit of {} s and was stopped",
                        limit.as_secs_f64()
                    )));
                }
            };
            match next {
                Some(batch) => {
                    let batch = batch.map_err(Error::from)?;
                    let encoder = rest.encoder.as_mut().expect("encoder until the end");
                    let bytes = encoder.batch(&batch)?;
                    if !bytes.is_empty() {
                        return Ok(Some((bytes, rest)));
                    }
                }
                None => rest.stream = None,
            }
        }
    });
    let body = futures::stream::iter(head.into_iter().map(Ok::<_, Error>))
        .chain(tail)
        .map(|r| r.map_err(|e| std::io::Error::other(e.to_string())));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", format.file_name()),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

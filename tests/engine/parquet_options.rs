//! Parquet writing options: float32 embeddings (opt-in, lossless or refused) and the
//! encodings chosen for float columns.

use ckpt::{CheckpointManager, ConversationSummary, FileFormat, Root};

use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

use crate::common::summaries;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float32_embeddings_round_trip_bit_for_bit_and_are_smaller() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::local(dir.path()).unwrap();
    let items = summaries(500, 64, 11);
    let wide = CheckpointManager::new(root.clone(), FileFormat::Parquet).unwrap();
    wide.save("wide", &items).await.unwrap();
    let narrow = CheckpointManager::new(root.clone(), FileFormat::Parquet)
        .unwrap()
        .float32_embeddings(true);
    narrow.save("narrow", &items).await.unwrap();
    let back: Vec<ConversationSummary> = narrow.load("narrow").await.unwrap().unwrap();
    assert_eq!(back.len(), items.len());
    for (a, b) in back.iter().zip(&items) {
        let (a, b) = (a.embedding.as_ref().unwrap(), b.embedding.as_ref().unwrap());
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    assert_eq!(back, items);
    let (w, n) = (
        wide.size("wide").await.unwrap().unwrap(),
        narrow.size("narrow").await.unwrap().unwrap(),
    );
    assert!(n < w, "float32 file {n} bytes is not smaller than {w}");

    // The stored column really is float32, so other tools see it as such.
    let file = std::fs::File::open(dir.path().join("narrow.parquet")).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr();
    let col = schema
        .columns()
        .iter()
        .find(|c| c.path().string().starts_with("embedding"))
        .unwrap();
    assert_eq!(col.physical_type(), datafusion::parquet::basic::Type::FLOAT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float32_embeddings_refuse_values_they_would_round_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::local(dir.path()).unwrap();
    let mut items = summaries(10, 64, 11);
    items[7].embedding.as_mut().unwrap()[3] = 0.1; // 0.1 is not a float32
    let m = CheckpointManager::new(root, FileFormat::Parquet)
        .unwrap()
        .float32_embeddings(true);
    let before = summaries(3, 64, 11);
    m.save("summaries", &before).await.unwrap();
    let err = m.save("summaries", &items).await.unwrap_err().to_string();
    assert!(err.contains("float32"), "{err}");
    assert_eq!(
        m.load::<ConversationSummary>("summaries")
            .await
            .unwrap()
            .unwrap(),
        before
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_columns_use_byte_stream_split_without_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let m = CheckpointManager::parquet(dir.path().to_str().unwrap()).unwrap();
    m.save("summaries", &summaries(50, 64, 11)).await.unwrap();
    let file = std::fs::File::open(dir.path().join("summaries.parquet")).unwrap();
    let reader = SerializedFileReader::new(file).unwrap();
    let rg = reader.metadata().row_group(0);
    let emb = rg
        .columns()
        .iter()
        .find(|c| c.column_path().string().starts_with("embedding"))
        .unwrap();
    let encodings: Vec<_> = emb.encodings().collect();
    assert!(
        encodings.contains(&datafusion::parquet::basic::Encoding::BYTE_STREAM_SPLIT),
        "{encodings:?}"
    );
    assert!(emb.dictionary_page_offset().is_none());
    let topic = rg
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "topic")
        .unwrap();
    assert!(
        topic.dictionary_page_offset().is_some(),
        "low-cardinality text keeps its dictionary"
    );
}

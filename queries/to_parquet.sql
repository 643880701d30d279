-- Convert a root to Parquet: every checkpoint of the root copied to parquet/<name>.parquet
-- (beside the source: relative COPY targets are names inside the root), zstd level 3.
-- Each COPY prints the number of rows written. Query the result with
-- `ckpt query data/parquet ...`.
--
--   ckpt query data -f queries/to_parquet.sql
COPY summaries TO 'parquet/summaries.parquet'
    STORED AS PARQUET OPTIONS (compression 'zstd(3)');
COPY conversations TO 'parquet/conversations.parquet'
    STORED AS PARQUET OPTIONS (compression 'zstd(3)');
COPY clusters TO 'parquet/clusters.parquet'
    STORED AS PARQUET OPTIONS (compression 'zstd(3)');
COPY meta_clusters TO 'parquet/meta_clusters.parquet'
    STORED AS PARQUET OPTIONS (compression 'zstd(3)');
COPY dimensionality TO 'parquet/dimensionality.parquet'
    STORED AS PARQUET OPTIONS (compression 'zstd(3)');

-- Cluster sizes: how many conversations each base cluster holds, and its share (in %) of
-- all clustered conversations, largest first. `count` is the column Kura writes beside
-- chat_ids; it always equals the number of chat_ids.
--
--   ckpt query data -f queries/cluster_sizes.sql
SELECT
    name,
    slug,
    cardinality(chat_ids) AS conversations,
    round(100.0 * cardinality(chat_ids) / sum(cardinality(chat_ids)) OVER (), 1) AS share_pct
FROM clusters
ORDER BY conversations DESC, name;

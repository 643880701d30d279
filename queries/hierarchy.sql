-- The meta-cluster hierarchy: every meta cluster under its root (a cluster whose
-- parent_id is null), with its depth (0 for a root) and the path of names from the
-- root down, walked with a recursive CTE. Sorted by path, so each cluster follows its
-- parent as in a tree view.
--
--   ckpt query data -f queries/hierarchy.sql
WITH RECURSIVE tree (id, name, parent_id, conversations, depth, path) AS (
    SELECT id, name, parent_id, cardinality(chat_ids) AS conversations, 0 AS depth,
           name AS path
    FROM meta_clusters
    WHERE parent_id IS NULL
    UNION ALL
    SELECT c.id, c.name, c.parent_id, cardinality(c.chat_ids), t.depth + 1,
           t.path || ' > ' || c.name
    FROM meta_clusters c
    JOIN tree t ON c.parent_id = t.id
)
SELECT depth, repeat('  ', depth) || name AS cluster, conversations, path, id, parent_id
FROM tree
ORDER BY path;

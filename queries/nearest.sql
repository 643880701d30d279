-- Nearest neighbours: the 10 conversations whose summary embeddings are closest (by
-- cosine similarity) to the summary of conversation '81_claude-v1_0'. Change the chat_id
-- in `target` to ask about another conversation.
--
--   ckpt query data -f queries/nearest.sql
WITH target AS (
    SELECT chat_id, embedding FROM summaries WHERE chat_id = '81_claude-v1_0'
)
SELECT
    s.chat_id,
    cosine_similarity(t.embedding, s.embedding) AS similarity,
    s.topic,
    s.summary
FROM summaries s
CROSS JOIN target t
WHERE s.chat_id <> t.chat_id AND s.embedding IS NOT NULL
ORDER BY similarity DESC NULLS LAST, s.chat_id
LIMIT 10;

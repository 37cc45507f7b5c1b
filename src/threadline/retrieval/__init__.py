"""The retrieval engine behind vector stores and the ``file_search`` tool.

- ``parsing``: a file's bytes to text (text, Markdown, code, JSON, HTML, PDF, DOCX), with caps;
- ``chunking``: text to token windows (OpenAI's ``auto`` and ``static`` strategies);
- ``terms``: text to keyword terms (lowercase words; character bigrams for Chinese and Japanese);
- ``index``: one vector store's chunks in memory: cosine over a numpy matrix and BM25;
- ``ranking``: reciprocal rank fusion of the two rankings, score threshold, result count;
- ``engine``: ingest a file into a store, search stores, through the ports it is given.

The ports (``Embedder``, ``ChunkIndex``, ``ChunkPreparer``) and the engine's own interface
(``Retrieval``, with ``ChunkingStrategy`` and ``RankingOptions``) are in
``threadline.domain.ports.retrieval``; citation markers in ``threadline.domain.ports.citations``.

Nothing here speaks SQL or HTTP: the chunk table lives in ``store/chunks.py`` and the embedding
models in ``providers/embeddings.py``.
"""

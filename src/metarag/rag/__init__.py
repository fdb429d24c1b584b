"""The RAG model: retrieve top-k passages, generate, train retriever and generator jointly."""

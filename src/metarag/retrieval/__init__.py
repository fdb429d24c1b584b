"""Retrieval: dense encoder, FAISS index, BM25 and hybrid fusion."""

"""Blind A/B human review of two evaluate runs: store, pairing, web page, statistics.

`runs` loads and pairs predictions, `db` is the SQLite store, `app` the FastAPI
page, `summary` the win rates and agreement (`metarag review`).
"""

"""The jobflow JobStore DFT results go to.

``json`` (default): maggma JSONStores in the candidate's own directory of the campaign,
so that concurrent DFT jobs never write the same file. ``mongo``: one MongoDB
collection for the campaign (``dft.store.uri``), for clusters that run a database.
Large outputs (volumetric data) go to the ``data`` additional store in both cases.
"""

from __future__ import annotations

from pathlib import Path


def open_store(store_settings: dict, directory: str | Path):
    from jobflow import JobStore

    kind = store_settings["type"]
    if kind == "json":
        from maggma.stores import JSONStore

        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        docs = JSONStore(str(directory / "docs.json"), read_only=False, key="uuid")
        data = JSONStore(str(directory / "data.json"), read_only=False, key="uuid")
    elif kind == "mongo":
        from maggma.stores import MongoURIStore

        uri, database = store_settings["uri"], store_settings["database"]
        collection = store_settings["collection"]
        docs = MongoURIStore(uri, collection_name=collection, database=database, key="uuid")
        data = MongoURIStore(uri, collection_name=f"{collection}_data", database=database, key="uuid")
    else:  # the schema only admits the two above
        raise ValueError(f"dft.store.type: unknown store '{kind}'")
    return JobStore(docs, additional_stores={"data": data})

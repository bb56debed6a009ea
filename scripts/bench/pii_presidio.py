#!/usr/bin/env python3
"""Microsoft Presidio on the first ROWS rows of a CSV, for `citadel-bench pii`.

Usage: pii_presidio.py CSV ROWS WORKDIR
Prints one JSON object: the NLP model used, the seconds spent in analysis
(engine start-up excluded), the bytes and cells analysed, and per column and
row the entity types Presidio reported (default score threshold, so its
recall is as high as it gets).

Every cell is analysed as its own text with BatchAnalyzerEngine, the way
Presidio's documentation analyses tabular data. The official spaCy models
are not published on PyPI; when none is installed, Presidio runs its pattern
recognizers (and phonenumbers) over spaCy's blank English tokenizer, with no
NER: it then finds no person names, locations or free-form dates.
"""
import csv
import json
import sys
import time
from pathlib import Path


def main() -> None:
    path, rows, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    import spacy
    import tldextract

    # Offline: the e-mail recognizer's domain check uses the public suffix
    # list bundled with tldextract instead of fetching it.
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    model = None
    for name in ("en_core_web_lg", "en_core_web_md", "en_core_web_sm"):
        if spacy.util.is_package(name):
            model = name
            break
    if model is None:
        blank = work / "spacy-blank-en"
        spacy.blank("en").to_disk(blank)
        model_path, model = str(blank), "none (spaCy blank English tokenizer; pattern recognizers only)"
    else:
        model_path = model
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model_path}])
    analyzer = AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])
    batch = BatchAnalyzerEngine(analyzer_engine=analyzer)

    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        table = []
        for i, rec in enumerate(reader):
            if i >= rows:
                break
            table.append(rec)
    columns = {h: [r[j] for r in table] for j, h in enumerate(header)}
    nbytes = sum(len(v.encode()) for col in columns.values() for v in col)
    results = {}
    start = time.perf_counter()
    for h, values in columns.items():
        found = batch.analyze_iterator(values, language="en")
        results[h] = [sorted({r.entity_type for r in cell}) for cell in found]
    seconds = time.perf_counter() - start
    print(json.dumps({
        "model": model,
        "presidio_version": __import__("importlib.metadata").metadata.version("presidio-analyzer"),
        "rows": len(table),
        "cells": len(table) * len(header),
        "bytes": nbytes,
        "seconds": seconds,
        "results": results,
    }))


if __name__ == "__main__":
    main()

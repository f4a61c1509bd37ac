"""Imaging exchange: DICOM studies on their way in, checked and de-identified.

Pure modules, no models: ``deid`` de-identifies objects (PS3.15 Annex E, driven by the
pinned Table E.1-1 in ``ps315_table_e11.json``); ``quality`` checks a series for
planning; ``previews`` draws what the visual QC looks at; ``phantom`` makes synthetic
head CT series for tests and benchmarks.
"""

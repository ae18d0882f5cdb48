"""Adapters for the public benchmarks, each registered as a data source by name.

Importing this package registers every adapter (`data_prep.registry` imports it lazily):
`geometry3k`, `mathvista`, `mathverse`, `geoqa`, `clevr_count`, `superclevr`, `chartqa`,
`vqav2`, `scienceqa`, `mmmu`, `sat`, `cv_bench`. See `base` for the loader contract they share.
"""
from . import chartqa, clevr, geometry3k, geoqa, mathverse, mathvista, mmmu, scienceqa, vqav2  # noqa: F401
from . import cvbench, sat  # noqa: F401
from . import table  # noqa: F401  (`table`: your own data through a column map; not a benchmark)
from .base import (BadRecord, SampleStream, SampleTable, SourceDef, adapter_def, define_source,
                   format_skipped, record_to_sample, skipped_report, skipped_summary, split_by_id)

ADAPTER_SOURCES = ("geometry3k", "mathvista", "mathverse", "geoqa", "clevr_count", "superclevr",
                   "chartqa", "vqav2", "scienceqa", "mmmu", "sat", "cv_bench")

__all__ = ["ADAPTER_SOURCES", "BadRecord", "SampleStream", "SampleTable", "SourceDef", "adapter_def", "define_source",
           "format_skipped", "record_to_sample", "skipped_report", "skipped_summary", "split_by_id"]

"""Gather the pipeline's files into tables: two stages that share nothing but this folder.

Modules: `proxies` (`regmix collect-proxies`: RegMix-format CSVs of the proxy runs),
`database` (`regmix collect`: the DuckDB database and its Parquet copies, rebuilt from
the run's files), `rows` (each results file read into table rows), `statistics` (the
derived tables: task power, paired comparisons, transfer), `tables` (the database's
column types and views).

Nothing is imported here, so the CSV collector's rerun tracking (its import closure)
does not include the database builder's modules.
"""

"""neogen's benchmarks: named experiments, one result schema, and the tables of bench/README.md generated from them.

Run `python -m bench list` for the experiments, `python -m bench run NAME` to measure one and `python -m bench
report` to regenerate the tables (see bench/__main__.py). The modules:

  experiments   the registry: every experiment's name, measuring function and default parameters
  record        the result schema: the one writer, the file names, the reader
  report        bench/README.md's tables from the result files, and their check
  common        helpers the measurements share (data, models, child processes)
  scoring, scoring_variants, score_memory, training, training_variants, quality, multilabel, many_labels, quantized
                the measurements
"""

"""Corpus-scale answering on Ray Data: many questions, many files, one output file per input file.

``shards`` finds the input files, checks their columns and names their outputs (no Ray);
``actor`` is the callable class each Ray actor holds (one QuestionAnswerer, loaded once);
``engine`` is the driver: it starts or joins Ray, streams the rows through the actors and
writes each shard atomically when its last answer is in.
"""

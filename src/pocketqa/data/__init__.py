"""Data: SQuAD files, tokenizers, question/context windows."""

"""Answer-keeping data augmentation: word edits and masked-LM / word-vector candidates."""

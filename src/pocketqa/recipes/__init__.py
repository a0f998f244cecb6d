"""Recipes: the training loops (fine-tuning, distillation, MLM head) and the shipped YAML recipes."""

"""Training components shared by the recipes: losses, optimizer, precision, checkpoints, logs."""

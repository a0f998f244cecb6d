"""Model cards: README.md for a model directory, with scores, size, speed and plots (``write_card``)."""

"""One module per suite; each has ``add_arguments(parser)`` and ``run(args) -> Results``."""

"""P-Aligner instruction pre-alignment: the aligner (prompt format, parser, guards, config) and the
``align`` stage."""

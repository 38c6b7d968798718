"""Data sets and data tools (one module each): generated sets for tests and
demos, and converters of published data sets' label files."""

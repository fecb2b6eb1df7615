"""Command-line adapters: parse, call the library, print."""

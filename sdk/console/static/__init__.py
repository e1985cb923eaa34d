"""The console's stylesheet and script (package data, served at /static/)."""

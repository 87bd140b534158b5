"""The `revenipe` command line: parse, call a service, render. No rules here."""

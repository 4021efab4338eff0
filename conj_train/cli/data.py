"""Placeholder: replaced by the data-ingestion work."""


def register(sub):
    sub.add_parser("data", help="(in progress)")

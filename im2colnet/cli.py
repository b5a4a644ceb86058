"""Placeholder module."""


def main(argv=None):
    print("im2colnet: command line not built yet")
    return 0

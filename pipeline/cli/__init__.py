"""The thin command line: each module parses options and calls one library function."""

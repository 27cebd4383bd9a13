"""User errors: bad input that deserves one clear line, not a traceback."""


class UserError(Exception):
    """Raised for bad input (params, files, rows). The CLI prints `str(err)` and exits with code 2."""

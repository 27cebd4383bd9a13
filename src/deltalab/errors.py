"""User errors: bad input that deserves one clear line, not a traceback."""


class UserError(Exception):
    """Raised for bad input (params, files, rows). The CLI prints `str(err)` and exits with code 2."""


class RequestFailed(UserError):
    """A server request that failed for good (after its retries): `index` is its position in the list
    the backend was given (the stage names the prompt), `reason` why."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"request {index}: {reason}")
        self.index, self.reason = index, reason

"""The one exception type the command line reports as a plain message, without a traceback."""


class EvaluationError(Exception):
    """A problem with the user's folders, files or options."""
